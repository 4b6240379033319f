"""Where a chunk step of the streaming engine spends its time, against the floor of reading the weights once.

    python -m scripts.profile_streaming_step --model random:nemotron_streaming_0.6b [--streams 8]
        [--lookahead 70,0] [--seconds 2] [--repeats 2] [--top 12]

In one run, on ``--streams`` streams of ``--seconds`` of demo speech (``scripts/bench_concurrency.streams``):

- the engine's step time (p50) with its CPU kernels (``recipes.streaming.kernels.FewRowKernels``) and without them,
  alternately ``--repeats`` times, and the ratio;
- the weight-read floor: one matrix-vector product through every weight of the encoder's linear layers and
  pointwise convolutions (each weight read from memory once), best of 3, and the memory speed it implies;
- ``torch.profiler``'s table of one run with the kernels, by operator and input shape, per step.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from typing import Sequence
from unittest import mock

import numpy as np
import torch

from recipes.errors import exit_on_usage_error
from recipes.streaming import engine
from recipes.streaming.engine import StreamingRecognizer
from scripts.bench_concurrency import SOURCES, speech, streams
from scripts.bench_models import REPO, describe_machine, load_bench_model, parse_lookahead, pick_device


def weight_read_seconds(encoder, repeats: int = 3) -> tuple[float, int]:
    """Best time of one matrix-vector product through every linear and pointwise-convolution weight, and bytes."""
    weights = [
        m.weight.reshape(m.weight.size(0), -1)
        for m in encoder.modules()
        if type(m) is torch.nn.Linear or (type(m) is torch.nn.Conv1d and m.kernel_size == (1,))
    ]
    vectors = {w.size(1): torch.randn(w.size(1), device=w.device) for w in weights}
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            for w in weights:
                torch.mv(w, vectors[w.size(1)])
            best = min(best, time.perf_counter() - start)
    return best, sum(w.numel() * w.element_size() for w in weights)


@exit_on_usage_error("scripts.profile_streaming_step")
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/demo_base.nemo"))
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--lookahead", type=parse_lookahead, default=[70, 0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    model = load_bench_model(args.model, device)
    audios = streams(speech(SOURCES, 60.0), args.streams, args.seconds)
    recognizer = StreamingRecognizer(model, batch_size=args.streams)
    feats = recognizer.features(audios)
    recognizer.stream(audios[:1], args.lookahead)  # warm-up
    print(
        f"# engine step, {describe_machine(device)}, model {args.model}, {args.streams} streams of "
        f"{args.seconds:g} s at {args.lookahead}\n"
    )

    times: dict[str, list[float]] = {"with kernels": [], "without": []}
    for _ in range(args.repeats):
        for label, kernels in (("with kernels", engine.FewRowKernels), ("without", lambda encoder: nullcontext())):
            with mock.patch.object(engine, "FewRowKernels", kernels):
                times[label] += recognizer.stream(audios, args.lookahead, features=feats).step_seconds
    p50 = {label: float(np.median(values)) for label, values in times.items()}
    floor, size = weight_read_seconds(model.encoder)
    print("| | step p50 (ms) |\n|---|---:|")
    print(f"| engine, with its CPU kernels | {p50['with kernels'] * 1000:.1f} |")
    print(f"| engine, NeMo's kernels | {p50['without'] * 1000:.1f} |")
    print(f"| weight-read floor ({size / 1e9:.2f} GB, {size / floor / 1e9:.1f} GB/s) | {floor * 1000:.1f} |")
    print(
        f"\nwithout / with kernels: {p50['without'] / p50['with kernels']:.2f}x; "
        f"with kernels / floor: {p50['with kernels'] / floor:.2f}x\n"
    )

    with torch.profiler.profile(record_shapes=True) as profile:
        steps = len(recognizer.stream(audios, args.lookahead, features=feats).step_seconds)
    print(f"torch.profiler, one run of {steps} steps (self CPU time in total; divide by {steps} for a step):")
    print(
        profile.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=28, max_shapes_column_width=70
        )
    )


if __name__ == "__main__":
    main()
