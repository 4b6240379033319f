"""What the streaming benchmarks share: the model to run (a file, or a config with random weights), the device and
number format, lookaheads (320 ms included), timing that waits for the GPU, and FLOP counting.

``random:<config>`` builds ``conf/model/<config>.yaml``'s architecture from scratch with random weights (seed 0)
and a SentencePiece tokenizer of the config's vocabulary size trained on demo-grammar text
(``data_prep.demo_corpus.texts.sample_texts``): the real 0.6B architecture with nothing downloaded. Throughput and FLOPs
of a chunk step depend on the shapes, not on the weights; transcripts of random weights are only good for
comparing methods with each other.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import open_dict
from torch.utils.flop_counter import FlopCounterMode

from recipes.allocator import keep_freed_memory
from recipes.config import CONF, REPO, compose_config
from recipes.streaming.geometry import lookahead_ms

RANDOM = "random:"
TOKENIZERS = REPO / "data/bench/tokenizers"

# 320 ms = 4 encoder frames, right context 3. A chunked-limited left context must be whole chunks
# (NeMo: left % (right + 1) == 0) and 70 % 4 = 2, so 320 ms runs as [68, 3]: 17 chunks of 4 frames, which is also
# what NeMo's offline mask makes of [70, 3] (70 // 4 = 17 visible chunks). 68 cached frames instead of 70: about
# 3 % less attention work than the trained lookaheads. Neither model was trained at 320 ms, so its WER means nothing;
# its cost is that of a 320 ms deployment.
LOOKAHEAD_320MS = [68, 3]


def pick_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one."""
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def demo_tokenizer(
    vocab_size: int, sentences: int = 20000, style: str = "plain", out: Path | None = None, extra: Sequence[str] = ()
) -> Path:
    """A BPE tokenizer of ``vocab_size`` pieces on demo-grammar sentences of both domains in ``style`` (``plain`` or
    ``pnc``, see ``data_prep.demo_corpus.texts``) and the ``extra`` lines (made once, kept in ``out``)."""
    from data_prep.demo_corpus.texts import sample_texts
    from data_prep.tokenizer import train_sentencepiece

    out = out or TOKENIZERS / f"demo_bpe{vocab_size}"
    if not (out / "tokenizer.model").is_file():
        rng = np.random.default_rng(0)
        texts = [text for domain in ("general", "target") for text in sample_texts(domain, sentences, rng, style=style)]
        train_sentencepiece([*texts, *extra], out, vocab_size)
    return out


def random_model(config: str, tokenizer_dir: str | Path, seed: int = 0):
    """``conf/model/<config>.yaml``'s architecture built from scratch, as the recipe builds it, with random weights
    drawn from ``seed`` and the SentencePiece tokenizer in ``tokenizer_dir``."""
    from recipes.finetune.model import build_model

    overrides = [f"model={config}", "model.init_from=null", f"model.architecture.tokenizer.dir={tokenizer_dir}"]
    cfg = compose_config(CONF, "finetune", overrides)
    torch.manual_seed(seed)
    return build_model(cfg.model)


def load_bench_model(spec: str, device: torch.device):
    """A ``.nemo`` / checkpoint / pretrained name (``recipes.model_files.load_model``), or ``random:<config>``."""
    from recipes.model_files import load_model

    if not spec.startswith(RANDOM):
        return load_model(spec).to(device).eval()
    config = spec[len(RANDOM) :]
    vocab_size = compose_config(CONF, "finetune", [f"model={config}"]).model.architecture.decoder.vocab_size
    return random_model(config, demo_tokenizer(int(vocab_size))).to(device).eval()


def use_cuda_graph_decoding(model) -> None:
    """On a GPU, greedy RNNT decoding with NeMo's CUDA graphs (label looping), as NeMo's serving pipeline does."""
    if next(model.parameters()).is_cuda:
        cfg = model.cfg.decoding
        with open_dict(cfg):
            cfg.strategy = "greedy_batch"
            cfg.greedy.loop_labels = True
            cfg.greedy.use_cuda_graph_decoder = True
        model.change_decoding_strategy(cfg, verbose=False)


def number_format(device: torch.device, dtype: str):
    """``fp32``, or ``bf16`` autocast (weights stay fp32, matrix products run in bf16)."""
    if dtype == "fp32":
        return nullcontext()
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"--dtype {dtype}: use fp32 or bf16")


def use_allocator(choice: str) -> str:
    """``kept``: memory freed by a step kept for the next (``recipes.allocator``), or ``glibc`` as it is;
    returns the one in effect."""
    return "kept" if choice == "kept" and keep_freed_memory() else "glibc"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, into: list):
    """Wall time of the block, the GPU's queued work included; appended to ``into``."""
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    into.append(time.perf_counter() - start)


def lookaheads(model, extra: Sequence[Sequence[int]] = (LOOKAHEAD_320MS,)) -> list[list[int]]:
    """The model's lookaheads and ``extra``, longest chunk first."""
    found = [list(la) for la in model.encoder.att_context_size_all] + [list(la) for la in extra]
    unique = [la for i, la in enumerate(found) if la not in found[:i]]
    return sorted(unique, key=lookahead_ms, reverse=True)


def parse_lookahead(text: str) -> list[int]:
    left, right = text.split(",")
    return [int(left), int(right)]


def count_flops(run: Callable[[], object]) -> int:
    """Floating-point operations of ``run()`` (matrix products and convolutions, as PyTorch's counter counts them)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def describe_machine(device: torch.device) -> str:
    import platform

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()} CPU"
    )
    return f"{where}, {torch.get_num_threads()} threads, torch {torch.__version__}"
