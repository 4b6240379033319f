"""How many concurrent streams the streaming engine keeps up with, per chunk size, and whether latency drifts.

    python -m scripts.bench_concurrency --model models/demo_base.nemo [--lookaheads 70,13 68,3 ...]
        [--seconds 8] [--max-streams 1024] [--long-seconds 60] [--device auto] [--dtype fp32|bf16]
        [--allocator kept|glibc] [--out FILE]

``--model random:nemotron_streaming_0.6b`` runs the real 0.6B architecture with random weights
(``scripts/bench_models.py``). Default lookaheads: the model's own and 320 ms (run as [68, 3], see
``bench_models.LOOKAHEAD_320MS``).

A trial is N streams of ``--seconds`` of speech (windows of the demo dev sets, looped) that arrive together, each
delivering one chunk of audio per chunk duration. The engine (``StreamingRecognizer`` with ``batch_size`` N) steps
all of them at once, one chunk each per step, as a server's tick would. Each step's compute is measured
(``Transcripts.step_seconds``, which ends on the decoder's transfer of tokens to the host, so a GPU step is
complete when timed), plus the feature extraction of the trial shared out over its steps. The arrival of audio is
then replayed against those times: step k starts when chunk k has arrived and step k-1 has finished, and its
latency is from the arrival of the chunk to the end of the step, queueing included. N keeps up when the p99 latency
is within one chunk duration. N doubles from 1 until a trial fails, then a few bisection trials narrow the largest
N that keeps up. Replaying measured compute instead of sleeping between chunks takes minutes, not hours; a step's
compute does not depend on when it starts (on an idle machine).

Latency as streams grow long: one trial of the largest N (at least 1) with ``--long-seconds`` streams, step
latency per 10 s of stream time. Warm-up (one short trial per lookahead) is excluded from every figure.

Memory freed by a step is kept for the next (``recipes.allocator``), as a server should run the engine;
``--allocator glibc`` leaves glibc's malloc as it is (every step faults its activations in from the kernel).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lhotse import CutSet

from recipes.errors import exit_on_usage_error
from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import SAMPLE_RATE, ChunkPlan, lookahead_ms
from recipes.streaming.modes import evaluation_mode
from scripts.bench_models import (
    RANDOM,
    REPO,
    describe_machine,
    load_bench_model,
    lookaheads,
    number_format,
    parse_lookahead,
    pick_device,
    timed,
    use_allocator,
    use_cuda_graph_decoding,
)
from scripts.token_rate import SECONDS, BlankCalibration, speech_of

SOURCES = [REPO / "data/prepared/demo_target/dev/cuts.jsonl.gz", REPO / "data/prepared/demo_general/dev/cuts.jsonl.gz"]
WINDOW_SECONDS = 10.0  # stream time per row of the long-stream table
BISECTIONS = 3


def speech(sources: Sequence[Path], limit_seconds: float = 600.0) -> np.ndarray:
    """The dev utterances of ``sources`` end to end (at most ``limit_seconds``): the material streams are cut from."""
    pieces, total = [], 0.0
    for source in sources:
        for cut in CutSet.from_file(source):
            audio = cut.resample(SAMPLE_RATE).load_audio()[0].astype(np.float32)
            pieces.append(audio)
            total += len(audio) / SAMPLE_RATE
            if total >= limit_seconds:
                return np.concatenate(pieces)
    return np.concatenate(pieces)


def streams(material: np.ndarray, n: int, seconds: float) -> list[np.ndarray]:
    """``n`` streams of ``seconds`` each, starting 1.37 s apart in the (looped) material, so that they differ."""
    length = int(seconds * SAMPLE_RATE)
    looped = np.tile(material, 2 + (length + int(1.37 * SAMPLE_RATE) * n) // len(material))
    return [looped[(i * int(1.37 * SAMPLE_RATE)) % len(material) :][:length] for i in range(n)]


@dataclass
class Trial:
    streams: int
    seconds: float
    steps: int
    step_ms_p50: float
    step_ms_p99: float
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    features_ms_per_step: float
    rtf: float  # compute seconds (steps + features) per second of audio, all streams together
    keeps_up: bool


def replay(arrivals: Sequence[float], compute: Sequence[float]) -> list[float]:
    """Latency of each step when chunk k arrives at ``arrivals[k]`` and its step takes ``compute[k]`` seconds,
    one step at a time: from the chunk's arrival to the end of its step."""
    done, latencies = 0.0, []
    for arrival, seconds in zip(arrivals, compute):
        done = max(done, arrival) + seconds
        latencies.append(done - arrival)
    return latencies


def run_trial(
    model, device, dtype: str, audios: list[np.ndarray], la: list[int]
) -> tuple[Trial, list[float], list[float]]:
    """One trial; also returns, per step, its latency and when its chunk arrived (s), for the long-stream table."""
    recognizer = StreamingRecognizer(model, batch_size=len(audios))
    feature_seconds, stream_seconds = [], []
    with number_format(device, dtype):
        with timed(device, feature_seconds), torch.inference_mode():
            feats = recognizer.features(audios)
        with timed(device, stream_seconds):
            result = recognizer.stream(audios, la, features=feats)
    with evaluation_mode(model, la):
        plan = ChunkPlan.of(model.encoder)
    hop = recognizer._hop_seconds()
    frames = feats[0].size(1)
    steps = result.step_seconds
    share = feature_seconds[0] / len(steps)
    arrivals = [min(plan.end(k), frames) * hop for k in range(len(steps))]
    latencies = replay(arrivals, [s + share for s in steps])
    chunk = lookahead_ms(la) / 1000
    audio = sum(len(a) for a in audios) / SAMPLE_RATE
    ms = lambda values, q: float(np.percentile(values, q) * 1000)  # noqa: E731
    trial = Trial(
        streams=len(audios),
        seconds=len(audios[0]) / SAMPLE_RATE,
        steps=len(steps),
        step_ms_p50=ms(steps, 50),
        step_ms_p99=ms(steps, 99),
        latency_ms_p50=ms(latencies, 50),
        latency_ms_p99=ms(latencies, 99),
        latency_ms_max=ms(latencies, 100),
        features_ms_per_step=share * 1000,
        rtf=(sum(steps) + feature_seconds[0]) / audio,
        keeps_up=bool(np.percentile(latencies, 99) <= chunk),
    )
    return trial, latencies, arrivals


def largest_keeping_up(trial_at, max_streams: int) -> tuple[int, list[Trial]]:
    """Doubling from 1 stream until a trial fails, then ``BISECTIONS`` trials between the last pass and the fail."""
    trials: dict[int, Trial] = {}
    good, bad, n = 0, None, 1
    while n <= max_streams:
        trials[n] = trial_at(n)
        if not trials[n].keeps_up:
            bad = n
            break
        good, n = n, n * 2
    for _ in range(BISECTIONS):
        if bad is None or bad - good <= max(1, good // 16):
            break
        mid = (good + bad) // 2
        trials[mid] = trial_at(mid)
        good, bad = (mid, bad) if trials[mid].keeps_up else (good, mid)
    return good, [trials[k] for k in sorted(trials)]


def drift_table(latencies: list[float], arrivals_s: list[float]) -> list[dict]:
    """p50 / p99 step latency per ``WINDOW_SECONDS`` of stream time."""
    rows = []
    for start in np.arange(0.0, max(arrivals_s) + 1e-9, WINDOW_SECONDS):
        window = [lat for lat, t in zip(latencies, arrivals_s) if start <= t < start + WINDOW_SECONDS]
        if window:
            rows.append(
                {
                    "from_s": float(start),
                    "steps": len(window),
                    "latency_ms_p50": float(np.median(window) * 1000),
                    "latency_ms_p99": float(np.percentile(window, 99) * 1000),
                }
            )
    return rows


def benchmark(
    model,
    device,
    dtype: str,
    material: np.ndarray,
    la: list[int],
    seconds: float,
    max_streams: int,
    long_seconds: float,
) -> dict:
    run_trial(model, device, dtype, streams(material, 1, 2.0), la)  # warm-up
    best, trials = largest_keeping_up(
        lambda n: run_trial(model, device, dtype, streams(material, n, seconds), la)[0], max_streams
    )
    long_trial, latencies, arrivals = run_trial(model, device, dtype, streams(material, max(best, 1), long_seconds), la)
    return {
        "lookahead": la,
        "chunk_ms": lookahead_ms(la),
        "max_streams": best,
        "trials": [asdict(t) for t in trials],
        "long": asdict(long_trial),
        "long_windows": drift_table(latencies, arrivals),
    }


def print_report(report: dict) -> None:
    print(
        f"# concurrency benchmark, {report['date']}, {report['machine']}, device {report['device']}, {report['dtype']}, "
        f"allocator {report['allocator']}"
    )
    print(
        f"model {report['model']}: {report['parameters_m']:.1f}M parameters; trials of {report['seconds']:.0f} s streams\n"
    )
    print(
        "| chunk | largest N keeping up | step p50 / p99 at that N (ms) | latency p99 (ms) | RTF |\n|---|---:|---:|---:|---:|"
    )
    for r in report["results"]:
        at = next((t for t in r["trials"] if t["streams"] == r["max_streams"]), None)
        cells = (
            f"{at['step_ms_p50']:.1f} / {at['step_ms_p99']:.1f} | {at['latency_ms_p99']:.1f} | {at['rtf']:.3f}"
            if at
            else "- | - | -"
        )
        print(f"| {r['chunk_ms']} ms {r['lookahead']} | {r['max_streams']} | {cells} |")
    for r in report["results"]:
        print(f"\n## {r['chunk_ms']} ms {r['lookahead']}: trials\n")
        print("| N | steps | step p50 / p99 (ms) | latency p50 / p99 / max (ms) | features ms/step | RTF | keeps up |")
        print("|---:|---:|---:|---:|---:|---:|---|")
        for t in r["trials"]:
            print(
                f"| {t['streams']} | {t['steps']} | {t['step_ms_p50']:.1f} / {t['step_ms_p99']:.1f} | "
                f"{t['latency_ms_p50']:.1f} / {t['latency_ms_p99']:.1f} / {t['latency_ms_max']:.1f} | "
                f"{t['features_ms_per_step']:.2f} | {t['rtf']:.3f} | {'yes' if t['keeps_up'] else 'no'} |"
            )
        long = r["long"]
        print(
            f"\n{long['streams']} streams of {long['seconds']:.0f} s: latency by stream time "
            + ", ".join(
                f"{w['from_s']:.0f}-{w['from_s'] + WINDOW_SECONDS:.0f} s {w['latency_ms_p50']:.1f} / "
                f"{w['latency_ms_p99']:.1f} ms"
                for w in r["long_windows"]
            )
            + " (p50 / p99)"
        )


@exit_on_usage_error("scripts.bench_concurrency")
def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/demo_base.nemo"))
    parser.add_argument(
        "--lookaheads",
        type=parse_lookahead,
        nargs="*",
        default=None,
        help="left,right pairs (default: the model's and 320 ms as 68,3)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of every stream of a trial")
    parser.add_argument("--max-streams", type=int, default=1024)
    parser.add_argument("--long-seconds", type=float, default=60.0, help="stream length of the drift trial")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--allocator", default="kept", choices=["kept", "glibc"], help="kept: freed memory reused")
    parser.add_argument("--cuts", type=Path, nargs="*", default=SOURCES, help="speech to cut the streams from")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)

    allocator = use_allocator(args.allocator)
    device = pick_device(args.device)
    model = load_bench_model(args.model, device)
    use_cuda_graph_decoding(model)
    material = speech(args.cuts)
    calibration = BlankCalibration(model) if args.model.startswith(RANDOM) else None
    results = []
    for la in args.lookaheads or lookaheads(model):
        # random weights: a trained model's token rate on this speech, so decoding costs what it would
        calibrated = calibration.calibrate(*speech_of(args.cuts, SECONDS), la).describe() if calibration else None
        if calibrated:
            print(f"random weights at {la}: {calibrated}", flush=True)
        results.append(
            {
                **benchmark(model, device, args.dtype, material, la, args.seconds, args.max_streams, args.long_seconds),
                "random_weights": calibrated,
            }
        )
    report = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": describe_machine(device),
        "device": str(device),
        "dtype": args.dtype,
        "allocator": allocator,
        "model": args.model,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "seconds": args.seconds,
        "results": results,
    }
    print_report(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
