"""Memory pre-flight: before the first step, the largest batch the data config allows goes forward and backward
once, so a batch that does not fit stops the run in seconds with the ``batch_duration`` that would fit, instead
of an out-of-memory crash hours in when the longest utterances finally meet in one batch.

The batch is pessimistic: ``batch_duration // max_duration`` utterances (at least one), each ``max_duration``
seconds long with ``tokens_per_second`` random tokens: at a fixed total duration, longer utterances make the
larger RNNT joint tensor (batch x frames x tokens x vocabulary) and attention. (Without bucketing a batch can
pad short utterances to a long one and exceed this; bucketing bounds the padding.) It runs through the model's
own ``training_step`` inside the trainer (device, DDP wrapping and precision as training has them), without an
optimizer step, with every RNG stream and batch-norm statistic put back: training after it is bit-identical to
training without it. Peak memory is the CUDA allocator's on GPU and the process's peak RSS on CPU.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from recipes.errors import UsageError
from recipes.finetune.resume import rng_state, set_rng_state

log = logging.getLogger(__name__)

GIB = 2**30


class MemoryMeter:
    """Peak memory since :meth:`reset` and the limit it is compared with, on one device."""

    def __init__(self, device: torch.device, max_memory_gb: float | None):
        self.device = device
        self.max_memory = max_memory_gb * GIB if max_memory_gb else None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:  # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # the peak then counts from the process start: more pessimistic, still correct

    def current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _proc_status("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM")

    def limit(self) -> tuple[int, str]:
        """Bytes available and where that figure comes from."""
        if self.max_memory:
            return int(self.max_memory), "callbacks.preflight.max_memory_gb"
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            # What this process's allocator can reach: free memory plus what it holds already.
            return free + torch.cuda.memory_reserved(
                self.device
            ), f"free memory of {torch.cuda.get_device_name(self.device)}"
        for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
            try:
                text = Path(path).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 2**60:
                return int(text), "the cgroup memory limit"
        return _proc_meminfo("MemTotal"), "the machine's RAM"


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _proc_meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/meminfo")


def fitting_batch_duration(base: int, peak: int, utterances: int, limit: int, max_duration: float) -> float:
    """The largest ``batch_duration`` (a multiple of ``max_duration``) whose batch fits ``limit``, assuming memory
    grows linearly with the number of utterances from ``base`` (the model, before the batch); 0 if none fits."""
    per_utterance = max(peak - base, 1) / utterances
    return max(0, math.floor((limit - base) / per_utterance)) * max_duration


@contextmanager
def _state_kept(trainer: Trainer, module: LightningModule):
    """Put back what a forward/backward pass changes besides memory: RNG streams (NeMo draws the lookahead with
    ``random``, SpecAugment and dropout use torch's), batch-norm statistics, gradients, train/eval mode; and keep
    NeMo's ``training_step`` from logging a loss that is not a training step's, or decoding it for a training
    WER (it does when ``(global_step + 1) % log_every_n_steps == 0``; under DDP that metric synchronises ranks)."""
    rng = rng_state()
    norms = {
        name: buf.clone() for name, buf in module.named_buffers() if "running_" in name or "batches_tracked" in name
    }
    training, log_every = module.training, trainer.log_every_n_steps
    module.log = module.log_dict = lambda *args, **kwargs: None  # instance attributes shadow the methods
    trainer.log_every_n_steps = trainer.global_step + 2
    try:
        yield
    finally:
        trainer.log_every_n_steps = log_every
        del module.log, module.log_dict
        module.zero_grad(set_to_none=True)
        module.train(training)
        buffers = dict(module.named_buffers())
        for name, value in norms.items():
            buffers[name].copy_(value)
        set_rng_state(rng)


def pessimistic_batch(module: LightningModule, utterances: int, seconds: float, tokens_per_second: float):
    """``utterances`` x ``seconds`` of noise with random transcripts, in the (audio, audio_lens, tokens,
    token_lens) layout of NeMo's Lhotse ASR batches; drawn from its own generator (global RNG untouched)."""
    cfg = module.cfg
    sample_rate = cfg.preprocessor.sample_rate
    frames = int(seconds / (cfg.preprocessor.window_stride * cfg.encoder.subsampling_factor))
    # A CTC head needs no more tokens than frames; an RNNT-only model could take more, but speech does not.
    tokens = max(1, min(math.ceil(tokens_per_second * seconds), frames))
    gen = torch.Generator().manual_seed(0)
    audio = 0.1 * torch.randn(utterances, int(seconds * sample_rate), generator=gen)
    text = torch.randint(0, module.tokenizer.vocab_size, (utterances, tokens), generator=gen)
    lengths = lambda n: torch.full((utterances,), n, dtype=torch.long)  # noqa: E731
    return [t.to(module.device) for t in (audio, lengths(audio.shape[1]), text, lengths(tokens))], tokens


class MemoryPreflight(Callback):
    """Runs the pre-flight at ``on_train_start`` (model on its device, wrapped, optimizer built) and stops the run
    with a :class:`UsageError` when the batch does not fit."""

    def __init__(
        self,
        enabled: bool = True,
        batch_duration: float = 0.0,
        max_duration: float = 0.0,
        tokens_per_second: float = 8.0,
        max_memory_gb: float | None = None,
    ):
        self.enabled = enabled
        self.batch_duration = batch_duration
        self.max_duration = max_duration
        self.tokens_per_second = tokens_per_second
        self.max_memory_gb = max_memory_gb

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled:
            return
        meter = MemoryMeter(pl_module.device, self.max_memory_gb)
        utterances = max(1, int(self.batch_duration // self.max_duration))
        tried, base, peak = utterances, 0, 0
        while tried >= 1:
            try:
                base, peak, tokens = self._measure(trainer, pl_module, meter, tried)
                break
            except torch.OutOfMemoryError:  # halve until one fits: that one's peak gives the estimate
                tried //= 2
        if tried < 1:
            raise UsageError(self._too_big(f"one {self.max_duration:g} s utterance runs out of GPU memory"))
        moments = optimizer_moments_bytes(trainer)
        limit, source = meter.limit()
        log.info(
            "Memory pre-flight: %d x %.1f s utterances (%d tokens each), forward + backward: peak %.2f GiB %s "
            "(+%.2f GiB of optimizer moments from the first step), limit %.2f GiB (%s)",
            tried,
            self.max_duration,
            tokens,
            peak / GIB,
            "allocated on GPU" if meter.device.type == "cuda" else "RSS",
            moments / GIB,
            limit / GIB,
            source,
        )
        if tried == utterances and peak + moments <= limit:
            return
        fit = fitting_batch_duration(base + moments, peak + moments, tried, limit, self.max_duration)
        if tried < utterances:
            fit = min(fit, tried * self.max_duration)
        needs = f"the largest batch ({utterances} x {self.max_duration:g} s) " + (
            "runs out of GPU memory"
            if tried < utterances
            else f"needs {(peak + moments) / GIB:.2f} GiB at peak, above the {limit / GIB:.2f} GiB of {source}"
        )
        if fit >= self.max_duration:
            raise UsageError(
                f"data.train_ds.batch_duration={self.batch_duration:g}: {needs}: set "
                f"data.train_ds.batch_duration={fit:g} or less (or lower data.train_ds.max_duration)"
            )
        raise UsageError(self._too_big(needs))

    def _too_big(self, needs: str) -> str:
        return (
            f"data.train_ds.max_duration={self.max_duration:g}: {needs}, and even one utterance that long does not "
            f"fit: lower data.train_ds.max_duration (data_prep filters.max_duration) or use a larger device"
        )

    def _measure(self, trainer: Trainer, pl_module: LightningModule, meter: MemoryMeter, utterances: int):
        batch, tokens = pessimistic_batch(pl_module, utterances, self.max_duration, self.tokens_per_second)
        meter.reset()
        base = meter.current()
        try:
            with _state_kept(trainer, pl_module):
                pl_module.train()
                with trainer.precision_plugin.train_step_context():
                    out = pl_module.training_step(batch, 0)
                (out["loss"] if isinstance(out, dict) else out).backward()
                del out
            return base, meter.peak(), tokens
        finally:
            del batch
            if meter.device.type == "cuda":
                torch.cuda.empty_cache()


def optimizer_moments_bytes(trainer: Trainer) -> int:
    """Memory the optimizer will allocate at the first step (Adam-style moments: two per parameter); 0 when
    its state exists already (a resumed run)."""
    total = 0
    for opt in trainer.optimizers:
        if opt.state:
            continue
        per_param = 2 if "adam" in type(opt).__name__.lower() else 1
        total += per_param * sum(p.numel() * p.element_size() for g in opt.param_groups for p in g["params"])
    return total
