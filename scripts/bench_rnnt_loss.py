"""Benchmark the RNNT loss on CPU: this repo's vectorised loss against NeMo's pytorch and numba losses.

    python -m scripts.bench_rnnt_loss [--repeats 3] [--threads 2]

For a few joint shapes (B, T, U+1, V) of the tiny demo model (T in 80 ms encoder frames, U in BPE tokens),
times forward + backward of each loss on the same random joint output, best of ``--repeats``, and prints the
seconds and the speed-up of the vectorised loss over each NeMo loss, plus the largest loss difference.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime, timezone

import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss

from recipes.errors import exit_on_usage_error
from recipes.finetune.loss import use_vectorized_loss

SHAPES = [  # (batch, frames, labels, vocab): ~2.4 s general utterances, ~4 s aviation calls, 10 s utterances
    (16, 30, 12, 129),
    (10, 50, 30, 129),
    (8, 125, 50, 129),
]


def make_loss(name: str, vocab: int) -> RNNTLoss:
    loss = RNNTLoss(
        num_classes=vocab - 1, reduction="mean_batch", loss_name="pytorch" if name == "vectorized" else name
    )
    if name == "vectorized":
        use_vectorized_loss(loss)
    return loss


def time_loss(loss: RNNTLoss, acts, targets, act_lens, label_lens, repeats: int) -> tuple[float, float]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = loss(log_probs=acts, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
        torch.autograd.grad(value, acts)
        best = min(best, time.perf_counter() - start)
    return best, float(value.detach())


@exit_on_usage_error("scripts.bench_rnnt_loss")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads; forward + backward, best of {args.repeats}"
    )
    print(
        "| B x T x U+1 x V | vectorized (s) | NeMo pytorch (s) | NeMo numba (s) | vs pytorch | vs numba | max loss diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for batch, frames, labels, vocab in SHAPES:
        acts = torch.randn(batch, frames, labels + 1, vocab, generator=generator, requires_grad=True)
        targets = torch.randint(0, vocab - 1, (batch, labels), generator=generator)
        act_lens = torch.randint(frames * 3 // 4, frames + 1, (batch,), generator=generator)
        label_lens = torch.randint(labels * 3 // 4, labels + 1, (batch,), generator=generator)
        act_lens[0], label_lens[0] = frames, labels
        timed = {
            name: time_loss(
                make_loss(name, vocab), acts, targets, act_lens, label_lens, 1 if name == "pytorch" else args.repeats
            )  # NeMo's pytorch loss takes minutes
            for name in ("vectorized", "pytorch", "warprnnt_numba")
        }
        (fast, value), (torch_s, torch_value), (numba_s, numba_value) = timed.values()
        diff = max(abs(value - torch_value), abs(value - numba_value))
        print(
            f"| {batch} x {frames} x {labels + 1} x {vocab} | {fast:.3f} | {torch_s:.2f} | {numba_s:.2f} | "
            f"{torch_s / fast:.0f}x | {numba_s / fast:.0f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
