"""Training throughput (audio seconds per wall second) and the padding share of batches, with and without
bucketing, measured one after the other in one run on the demo's prepared data.

    python -m scripts.bench_training                               # tiny model (demo fine-tune), CPU
    python -m scripts.bench_training --model nemotron_streaming_0.6b   # the 0.6B config, random weights, GPU bf16
    python -m scripts.bench_training --steps 40 -- trainer.devices=1   # more steps; extra recipes.finetune overrides

Each mode trains ``--steps`` optimizer steps through the recipe's own model and data code (Lightning, NeMo's
Lhotse loader) with checkpoints, validation and the pre-flight off; the first ``--warmup`` steps are not timed.
Padding share = padded samples / all samples of the batch tensors (the same share of encoder frames). Goal:
<= 10 % with bucketing. Memory: peak CUDA allocation on GPU, peak RSS on CPU. Needs ``data/`` (demo stages 1-2).
"""

from __future__ import annotations

import argparse
import gc
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import OmegaConf

from recipes.checks import check_finetune
from recipes.config import CONF, REPO, compose_config
from recipes.errors import exit_on_usage_error
from recipes.finetune.callbacks.memory import MemoryMeter
from recipes.finetune.model import build_model

GOAL_PADDING = 0.10


class BatchMeter(Callback):
    """Audio seconds, padding and wall time of every training batch after the warm-up."""

    def __init__(self, warmup: int, sample_rate: int):
        self.warmup, self.sample_rate = warmup, sample_rate
        self.audio = self.padded = self.total = 0.0
        self.batches = self.utterances = 0
        self.start = self.end = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            _sync()
            self.start = time.perf_counter()
        if self.start is not None:
            audio, lengths = batch[0], batch[1]
            self.audio += lengths.sum().item() / self.sample_rate
            self.total += audio.shape[0] * audio.shape[1]
            self.padded += audio.shape[0] * audio.shape[1] - lengths.sum().item()
            self.batches += 1
            self.utterances += audio.shape[0]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            _sync()
            self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tokenizer_for(vocab_size: int, out_dir: Path) -> Path:
    """A SentencePiece model of the architecture's vocabulary size trained on the demo's general-domain text, so
    the randomly initialised model has the real joint size (the tokenizer's size replaces decoder.vocab_size)."""
    import json

    from data_prep.tokenizer import train_sentencepiece

    lines = (REPO / "data/demo_corpus/general/train.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    return train_sentencepiece(texts, out_dir, vocab_size)


def bench(overrides: list[str], steps: int, warmup: int) -> dict:
    # No validation loader is attached, so no validation runs; no callbacks: no checkpoints, no pre-flight.
    cfg = compose_config(
        CONF,
        "finetune",
        [
            *overrides,
            f"trainer.max_steps={steps + warmup}",
            f"trainer.limit_train_batches={steps + warmup}",
            "trainer.enable_progress_bar=false",
            "~callbacks",
            "logger=none",
        ],
    )
    check_finetune(cfg)
    meter = BatchMeter(warmup, cfg.model.architecture.sample_rate)
    trainer = instantiate(cfg.trainer, callbacks=[meter], logger=False, enable_checkpointing=False)
    model = build_model(cfg.model, trainer)
    model.setup_training_data(OmegaConf.create(OmegaConf.to_container(cfg.data.train_ds, resolve=True)))
    memory = MemoryMeter(torch.device("cuda" if torch.cuda.is_available() else "cpu"), None)
    memory.reset()
    trainer.fit(model)
    wall = meter.end - meter.start
    return {
        "steps": meter.batches,
        "utterances": meter.utterances,
        "audio_s": meter.audio,
        "wall_s": wall,
        "audio_s_per_s": meter.audio / wall,
        "padding": meter.padded / meter.total,
        "peak_gib": memory.peak() / 2**30,
    }


@exit_on_usage_error("scripts.bench_training")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_streaming", choices=["tiny_streaming", "nemotron_streaming_0.6b"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("overrides", nargs="*", help="more recipes.finetune overrides")
    args = parser.parse_args()
    base = ["experiment=demo_finetune", f"paths.root_dir={REPO}", "run_name=bench_training"]
    tmp = tempfile.TemporaryDirectory()
    if args.model == "nemotron_streaming_0.6b":
        cfg = compose_config(CONF, "finetune", ["model=nemotron_streaming_0.6b"])
        tok = tokenizer_for(cfg.model.architecture.decoder.vocab_size, Path(tmp.name))
        base += ["model=nemotron_streaming_0.6b", "model.init_from=null", f"model.architecture.tokenizer.dir={tok}"]
        base += ["trainer=gpu"] if torch.cuda.is_available() else []  # bf16-mixed; on CPU only a smoke run
    base += args.overrides
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"# training throughput, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit.strip()}, "
        f"{platform.processor() or platform.machine()}, {device}, torch {torch.__version__}"
    )
    print(f"# {args.model}: {' '.join(base[1:])}; {args.steps} timed steps after {args.warmup} per mode\n")
    print("| batches | steps | utterances | audio (s) | wall (s) | audio s / s | padding | peak memory (GiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    modes = {
        "bucketing": [],
        "no bucketing": ["data.train_ds.use_bucketing=false", "data.train_ds.bucket_duration_bins=null"],
    }
    for name, mode in modes.items():
        r = results[name] = bench([*base, *mode], args.steps, args.warmup)
        gc.collect()  # the trainer and model hold each other: free the first mode's model before the second
        print(
            f"| {name} | {r['steps']} | {r['utterances']} | {r['audio_s']:.0f} | {r['wall_s']:.1f} | "
            f"{r['audio_s_per_s']:.1f} | {r['padding']:.1%} | {r['peak_gib']:.2f} |",
            flush=True,
        )
    padding = results["bucketing"]["padding"]
    print(
        f"\npadding with bucketing: {padding:.1%} (goal <= {GOAL_PADDING:.0%}: "
        f"{'met' if padding <= GOAL_PADDING else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
