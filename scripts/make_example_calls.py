"""A synthetic call-centre corpus in the shape of a real one, for the worked example of docs/own_data.md.

    python -m scripts.make_example_calls [--out data/example_calls] [--train-calls 8] [--dev-calls 1] [--seed 0]

Each call is a stereo 8 kHz mu-law WAV (telephone audio): the agent on channel 0, the customer on channel 1,
taking turns of 1 to 16 eSpeak sentences of the demo corpus (up to about 40 s: turns of 20-40 s are common in
call transcripts), with a little line noise on both channels. The NeMo manifests have one row per turn:
``audio_filepath``, ``offset``, ``duration``, ``channel`` (the speaker's), ``speaker`` and ``text``::

    <out>/train.jsonl, <out>/dev.jsonl
    <out>/audio/<split>/call_000.wav ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from data_prep.demo_corpus.corpus import make_demo_corpus
from recipes.errors import exit_on_usage_error

RATE = 8000
SPEAKERS = ("agent", "customer")  # channel 0, channel 1
MAX_TURN_S = 38.0


def _turns(rng: np.random.Generator, count: int) -> list[int]:
    """Sentences per turn."""
    return [int(rng.integers(1, 17)) for _ in range(count)]


def _call(sentences: list[tuple[np.ndarray, str]], plan: list[int], rng: np.random.Generator):
    """The stereo samples of one call and its rows (offset, duration, channel, text), from ``sentences`` in order."""
    channels, rows, cursor, used = [[], []], [], 0, 0
    for turn, wanted in enumerate(plan):
        audio, texts = [], []
        while len(texts) < wanted and used < len(sentences) and sum(map(len, audio)) < MAX_TURN_S * RATE * 0.9:
            x, text = sentences[used]
            audio.append(x)
            texts.append(text)
            used += 1
        if not texts:
            break
        speech = np.concatenate(audio)
        channel = turn % 2
        channels[channel].append((cursor, speech))
        rows.append(
            {"offset": cursor / RATE, "duration": len(speech) / RATE, "channel": channel, "text": " ".join(texts)}
        )
        cursor += len(speech) + int(rng.uniform(0.3, 1.0) * RATE)
    samples = 0.002 * rng.standard_normal((cursor, 2))  # line noise
    for channel, pieces in enumerate(channels):
        for start, speech in pieces:
            samples[start : start + len(speech), channel] += speech
    return samples, rows, used


def make_example_calls(out: Path, calls: dict[str, int], seed: int = 0) -> dict[str, Path]:
    """Write the corpus under ``out``; returns ``{split: manifest}``."""
    rng = np.random.default_rng(seed)
    plans = {split: [_turns(rng, int(rng.integers(3, 6))) for _ in range(n)] for split, n in calls.items()}
    needed = {split: sum(sum(p) for p in split_plans) for split, split_plans in plans.items()}
    with tempfile.TemporaryDirectory() as tmp:
        made = make_demo_corpus(
            tmp, seed=seed, sizes={"target": needed}, sample_rate=RATE, long_recording_fraction=0.0, num_workers=2
        )
        manifests = {}
        for split, split_plans in plans.items():
            source = made["target"][split]
            rows = [json.loads(line) for line in source.read_text().splitlines()]
            sentences = [(sf.read(source.parent / r["audio_filepath"])[0], r["text"]) for r in rows]
            manifests[split] = _write_split(out, split, split_plans, sentences, rng)
    return manifests


def _write_split(out: Path, split: str, plans: list[list[int]], sentences, rng) -> Path:
    audio_dir = out / "audio" / split
    shutil.rmtree(audio_dir, ignore_errors=True)
    audio_dir.mkdir(parents=True)
    lines = []
    for number, plan in enumerate(plans):
        samples, rows, used = _call(sentences, plan, rng)
        sentences = sentences[used:]
        path = audio_dir / f"call_{number:03d}.wav"
        sf.write(path, np.clip(samples, -1, 1), RATE, subtype="ULAW")
        for row in rows:
            lines.append(
                {
                    "audio_filepath": path.relative_to(out).as_posix(),
                    "offset": round(row["offset"], 3),
                    "duration": round(row["duration"], 3),
                    "channel": row["channel"],
                    "speaker": SPEAKERS[row["channel"]],
                    "text": row["text"],
                }
            )
    manifest = out / f"{split}.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return manifest


@exit_on_usage_error("scripts.make_example_calls")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/example_calls"))
    parser.add_argument("--train-calls", type=int, default=8)
    parser.add_argument("--dev-calls", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifests = make_example_calls(args.out, {"train": args.train_calls, "dev": args.dev_calls}, args.seed)
    for split, manifest in manifests.items():
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        hours = sum(r["duration"] for r in rows) / 3600
        longest = max(r["duration"] for r in rows)
        print(f"{split}: {len(rows)} turns, {hours:.3f} h, longest {longest:.1f} s -> {manifest}")


if __name__ == "__main__":
    main()
