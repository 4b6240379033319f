"""Where a chunk step of the streaming engine spends its time, against NeMo's step and the floor of reading the weights.

    python -m scripts.profile_streaming_step --model random:nemotron_streaming_0.6b [--streams 8]
        [--lookahead 70,0] [--seconds 2] [--repeats 2] [--top 12] [--allocator kept|glibc]

In one run, on ``--streams`` streams of ``--seconds`` of demo speech (``scripts/bench_concurrency.streams``):

- random weights (``random:<config>``): the blank logit calibrated at the lookahead on 30 s of the demo dev speech
  to the reference texts' token rate (``scripts/token_rate.py``), so that decoding costs what it would;
- the step time (p50 of a run, best of ``--repeats`` runs made alternately) of: the engine (its own attention
  step, CPU kernels for the weights ``recipes.streaming.kernels`` chooses); the engine with NeMo's kernels for
  every product; and NeMo's own chunk step (``cache_aware_stream_step`` with NeMo's caches and attention) on the
  same chunks with the same decoding; the ratios;
- the weight-read floor: one matrix-vector product through every weight of the encoder's linear layers and
  pointwise convolutions (each weight read from memory once), best of 3, and the memory speed it implies;
- ``torch.profiler``'s table of one run of the engine, by operator and input shape, per step.

As ``scripts.bench_concurrency``: freed memory kept for the next step unless ``--allocator glibc``.
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
from recipes.streaming.attention import nemo_step
from recipes.streaming.decoders import LabelLoopingDecoder
from recipes.streaming.engine import StreamingRecognizer, padded
from recipes.streaming.geometry import ChunkPlan
from recipes.streaming.modes import evaluation_mode, no_typechecks
from scripts.bench_concurrency import SOURCES, speech, streams
from scripts.bench_models import (
    RANDOM,
    REPO,
    describe_machine,
    load_bench_model,
    parse_lookahead,
    pick_device,
    timed,
    use_allocator,
)
from scripts.token_rate import SECONDS, BlankCalibration, speech_of


def weight_read_seconds(encoder, repeats: int = 3) -> tuple[float, int]:
    """Best time of one matrix-vector product through every linear and pointwise-convolution weight, and bytes."""
    weights = [
        m.weight.reshape(m.weight.size(0), -1)
        for m in encoder.modules()
        if type(m) is torch.nn.Linear or (type(m) is torch.nn.Conv1d and m.kernel_size == (1,))
    ]
    vectors = {w.size(1): torch.randn(w.size(1), device=w.device) for w in weights}
    seconds: list[float] = []
    with torch.no_grad():
        for _ in range(repeats):
            with timed(weights[0].device, seconds):
                for w in weights:
                    torch.mv(w, vectors[w.size(1)])
    return min(seconds), sum(w.numel() * w.element_size() for w in weights)


def nemo_step_seconds(model, feats: list[torch.Tensor], att_context_size) -> list[float]:
    """Per chunk step of streams of equal length: NeMo's own step (``cache_aware_stream_step`` with NeMo's caches,
    attention and modules) on the chunks the engine reads, with the engine's greedy decoding."""
    times = []
    with evaluation_mode(model, att_context_size), torch.inference_mode(), no_typechecks():
        encoder, plan = model.encoder, ChunkPlan.of(model.encoder)
        x, lengths = padded(feats)
        cache = encoder.get_initial_cache_state(batch_size=len(feats))
        decoder = LabelLoopingDecoder(model)
        for step in range(plan.steps(int(lengths.max()))):
            start = time.perf_counter()
            chunk, chunk_lengths, drop = plan.chunk_input(x, lengths, step)
            encoded, encoded_lengths, cache = nemo_step(encoder, chunk, chunk_lengths, cache, drop)
            decoder(encoded, encoded_lengths)
            times.append(time.perf_counter() - start)
    return times


def step_times(model, recognizer, audios, feats, la, repeats: int) -> dict[str, float]:
    """Step p50 (s) of the engine, the engine on NeMo's kernels, and NeMo's step, run alternately ``repeats``
    times: the best run's p50 of each (load from other work only ever adds time)."""
    runs: dict[str, list[float]] = {"engine": [], "engine, NeMo's kernels": [], "NeMo's step": []}
    for _ in range(repeats):
        runs["engine"].append(np.median(recognizer.stream(audios, la, features=feats).step_seconds))
        with mock.patch.object(engine, "FewRowKernels", lambda encoder: nullcontext()):
            runs["engine, NeMo's kernels"].append(np.median(recognizer.stream(audios, la, features=feats).step_seconds))
        runs["NeMo's step"].append(np.median(nemo_step_seconds(model, feats, la)))
    return {label: float(min(values)) for label, values in runs.items()}


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
    parser.add_argument("--allocator", default="kept", choices=["kept", "glibc"], help="kept: freed memory reused")
    args = parser.parse_args(argv)

    allocator = use_allocator(args.allocator)
    device = pick_device(args.device)
    model = load_bench_model(args.model, device)
    print(
        f"# engine step, {describe_machine(device)}, model {args.model}, {args.streams} streams of "
        f"{args.seconds:g} s at {args.lookahead}, allocator {allocator}\n",
        flush=True,
    )
    if args.model.startswith(RANDOM):
        calibrated = BlankCalibration(model).calibrate(*speech_of(SOURCES, SECONDS), args.lookahead)
        print(f"random weights: {calibrated.describe()}\n", flush=True)
    audios = streams(speech(SOURCES, 60.0), args.streams, args.seconds)
    recognizer = StreamingRecognizer(model, batch_size=args.streams)
    feats = recognizer.features(audios)
    recognizer.stream(audios[:1], args.lookahead)  # warm-up
    p50 = step_times(model, recognizer, audios, feats, args.lookahead, args.repeats)
    floor, size = weight_read_seconds(model.encoder)
    print(f"| best of {args.repeats} runs | step p50 (ms) | / floor |\n|---|---:|---:|")
    for label, seconds in p50.items():
        print(f"| {label} | {seconds * 1000:.1f} | {seconds / floor:.2f}x |")
    print(f"| weight-read floor ({size / 1e9:.2f} GB, {size / floor / 1e9:.1f} GB/s) | {floor * 1000:.1f} | 1.00x |")
    kernels, nemo = p50["engine, NeMo's kernels"] / p50["engine"], p50["NeMo's step"] / p50["engine"]
    print(
        f"\nthe engine {kernels:.2f}x faster than on NeMo's kernels, {nemo:.2f}x faster than NeMo's step\n", flush=True
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
