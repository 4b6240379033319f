"""Benchmark data preparation against a plain ``lhotse shar export`` of the same cuts.

    python -m scripts.bench_data_prep [--hours 1.0] [--workers N]

1. Makes (once, cached under data/bench/synthetic/) a Granary-style corpus of at least ``--hours`` of
   audio: long 16 kHz FLAC recordings cut into 5 s segments by ``offset``, plus whole-file 44.1 kHz WAVs
   (resampled by both sides). All mono: ``lhotse shar export`` cannot write down-mixed (MixedCut) cuts.
2. Runs ``python -m data_prep corpus=bench_synthetic`` from scratch (all validation, filters, summary).
3. Runs ``lhotse shar export`` on the ``cuts.jsonl.gz`` that step 2 wrote: same cuts, same workers,
   same shard size and audio format.
4. Runs step 2 again with one worker, to show how the workers scale.

Prints hours of audio prepared per minute and the ratio of our time to the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import soundfile as sf

from recipes.config import REPO
from recipes.errors import exit_on_usage_error

WORDS = (
    "the account number is please hold while I check your order it was shipped on monday "
    "we can offer a refund or a replacement thank you for calling have a nice day"
).split()


def make_corpus(root: Path, hours: float, seed: int = 0) -> Path:
    """Write the synthetic corpus (unless already there) and return its manifest."""
    manifest = root / "train.jsonl"
    stamp = root / "hours.txt"
    if manifest.is_file() and stamp.is_file() and float(stamp.read_text()) >= hours:
        return manifest
    shutil.rmtree(root, ignore_errors=True)
    (root / "audio").mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def signal(seconds: float, rate: int) -> np.ndarray:
        t = np.arange(int(seconds * rate)) / rate
        f0 = rng.uniform(100, 300)
        x = 0.2 * np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
        return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    def text(seconds: float) -> str:
        return " ".join(rng.choice(WORDS, size=max(1, int(seconds * 2.5))))

    rows, total = [], 0.0
    long_s, segment_s, short_s = 75.0, 5.0, 5.0
    i = 0
    while total < hours * 3600:
        if i % 5 < 4:  # a long recording, segmented by offset (one Recording, many cuts)
            name = f"audio/long_{i:04d}.flac"
            sf.write(root / name, signal(long_s, 16000), 16000)
            for k in range(int(long_s / segment_s)):
                rows.append(
                    {
                        "audio_filepath": name,
                        "offset": k * segment_s,
                        "duration": segment_s,
                        "text": text(segment_s),
                        "source_lang": "en",
                        "pnc": "no",
                        "itn": "no",
                    }
                )
            total += long_s
        else:  # whole-file utterances at 44.1 kHz
            for k in range(15):
                name = f"audio/short_{i:04d}_{k:02d}.wav"
                sf.write(root / name, signal(short_s, 44100), 44100)
                rows.append({"audio_filepath": name, "duration": short_s, "text": text(short_s)})
                total += short_s
        i += 1
    with open(manifest, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    stamp.write_text(f"{total / 3600:.4f}")
    return manifest


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, all child processes) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@exit_on_usage_error("scripts.bench_data_prep")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="at least this much audio (default 1.0)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="default: all cores")
    parser.add_argument("--data", type=Path, default=REPO / "data/bench/synthetic", help="corpus cache folder")
    parser.add_argument(
        "--shard-size", type=int, default=100, help="both sides; small enough for several shards per worker"
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the one-worker run")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    manifest = make_corpus(args.data, args.hours)
    hours = float((args.data / "hours.txt").read_text())
    python, lhotse_cli = sys.executable, str(Path(sys.executable).parent / "lhotse")
    print(f"corpus: {manifest} ({hours:.2f} h)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
        f"python {platform.python_version()}; {date.today()}"
    )

    with tempfile.TemporaryDirectory(prefix="bench_data_prep_") as tmp:
        out = Path(tmp) / "prepared"

        def ours(workers: int) -> tuple[float, float]:
            shutil.rmtree(out, ignore_errors=True)
            return timed(
                [
                    python,
                    "-m",
                    "data_prep",
                    "corpus=bench_synthetic",
                    f"out_root={out}",
                    f"corpus.splits.train=[{manifest}]",
                    f"num_workers={workers}",
                    f"shar.shard_size={args.shard_size}",
                    "progress=false",
                ]
            )

        t_ours = ours(args.workers)
        summary = json.loads((out / "bench_synthetic/train/summary.json").read_text())
        cuts = out / "bench_synthetic/train/cuts.jsonl.gz"
        baseline_dir = Path(tmp) / "baseline"
        t_base = timed(
            [
                lhotse_cli,
                "shar",
                "export",
                "-a",
                "flac",
                "-s",
                str(args.shard_size),
                "-j",
                str(args.workers),
                "--no-shuffle",
                str(cuts),
                str(baseline_dir),
            ]
        )
        t_one = None if args.no_scaling else ours(1)

    kept = summary["hours"]["kept"]
    print(f"rows kept {summary['rows']['kept']}/{summary['rows']['in']}, {kept:.2f} h; shard size {args.shard_size}")
    print(f"{'run':<40} {'wall s':>7} {'h audio/min':>12} {'CPU s':>7}")
    runs = [
        (f"python -m data_prep ({args.workers} workers)", t_ours, hours),
        (f"lhotse shar export -j {args.workers} (baseline)", t_base, kept),
    ]
    if t_one is not None:
        runs.append(("python -m data_prep (1 worker)", t_one, hours))
    for name, (wall, cpu), h in runs:
        print(f"{name:<40} {wall:7.1f} {h / wall * 60:12.2f} {cpu:7.1f}")
    print(
        f"ratio data_prep / baseline: {t_ours[0] / t_base[0]:.2f}x wall, {t_ours[1] / t_base[1]:.2f}x CPU (goal <= 1.3x)"
    )
    if t_one is not None:
        print(f"speed-up {args.workers} workers vs 1: {t_one[0] / t_ours[0]:.2f}x wall")
    print(
        f"load average before the runs: {load_before:.1f} on {len(os.sched_getaffinity(0))} cores "
        "(other work on a shared machine skews wall times; CPU seconds are less affected)"
    )


if __name__ == "__main__":
    main()
