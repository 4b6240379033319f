"""Long-form dev sets: continuous evaluation streams built from a prepared split.

Dev sets of isolated utterances cannot show whether a streaming model keeps transcribing a long recording (a call,
a meeting): a model trained on short cuts only can go quiet after the first utterance of a stream. Two ways to
build continuous streams from a prepared ``cuts.jsonl.gz``:

- ``joined``: the split's utterances, in shuffled passes (each pass in a new order, as many as the length needs),
  joined into ``streams`` streams of up to ``minutes`` minutes with a pause drawn from ``gap_s`` (seconds of
  silence) between them; each stream is written as a FLAC file.
- ``recordings``: consecutive segments of one recording (Granary-style rows with ``offset`` into a long file),
  one stream from the first segment's start to the last one's end, the audio between them as recorded; a
  recording is split where segments overlap or the stream would pass ``minutes``; streams of one segment are left
  out. Nothing is copied: the stream points into the recording.

Each output directory holds ``cuts.jsonl.gz`` (one cut per stream, one supervision per utterance, so the reference
is the utterances' texts in order), ``segments.jsonl.gz`` (the same utterances one by one, in stream order: the
per-utterance WER of exactly these utterances) and ``summary.json``. Both manifests are dev sets like any other
for ``python -m recipes.evaluate`` and the fine-tuning callback (``data.long_form_sets``).

    python -m data_prep.long_form source=data/prepared/demo_general/dev/cuts.jsonl.gz \\
        output_dir=data/prepared/demo_general/dev_long minutes=20
    python -m data_prep corpus=demo_general     # the corpus config's ``long_form:`` entries, after the splits
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import hydra
import numpy as np
import soundfile
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from omegaconf import DictConfig, OmegaConf

from data_prep.checks import LONG_FORM
from data_prep.errors import DataPrepError
from data_prep.settings import resolve_config
from data_prep.summary import write_json
from recipes.config import CONF
from recipes.errors import exit_on_usage_error, run_hydra_main
from recipes.evaluate.sets import in_content_order

OPTIONS = ("mode", "minutes", "streams", "gap_s", "seed")  # of one stream set; conf/data_prep/long_form.yaml


def defaults() -> dict:
    conf = OmegaConf.load(CONF / "data_prep" / "long_form.yaml")
    return {key: OmegaConf.to_container(conf)[key] for key in OPTIONS}


def _text(cut: Cut) -> str:
    return " ".join(s.text for s in cut.supervisions if s.text)


def plan_joined(
    cuts: Sequence[Cut], minutes: float, streams: int, gap_s: Sequence[float], rng: random.Random
) -> list[list[tuple[float, Cut]]]:
    """``streams`` lists of ``(pause before, utterance)``, each at most ``minutes`` long, drawn from shuffled passes
    over ``cuts`` (a stream ends where the next utterance would not fit)."""
    limit, queue, plans = minutes * 60.0, [], []
    for _ in range(streams):
        items, length = [], 0.0
        while True:
            if not queue:
                queue = rng.sample(list(cuts), len(cuts))
            pause = rng.uniform(*gap_s) if items else 0.0
            if length + pause + queue[-1].duration > limit:
                break
            items.append((pause, queue.pop()))
            length += pause + items[-1][1].duration
        if not items:
            raise DataPrepError(f"minutes={minutes}: shorter than an utterance ({queue[-1].duration:.1f} s)")
        plans.append(items)
    return plans


def pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples (Lhotse's k / 32768 of 16-bit audio) as int16, exactly for 16-bit sources."""
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def write_joined(plan: Sequence[tuple[float, Cut]], stream_id: str, audio_dir: Path) -> tuple[MonoCut, list[Cut]]:
    """One planned stream as ``<audio_dir>/<stream_id>.flac`` and its cut; also the utterances as segment cuts."""
    rate = plan[0][1].sampling_rate
    pieces, supervisions, segments, position = [], [], [], 0
    for index, (pause, cut) in enumerate(plan):
        silence = round(pause * rate)
        audio = cut.resample(rate).load_audio().mean(axis=0)
        pieces += [np.zeros(silence, dtype=np.int16), pcm16(audio)]
        position += silence
        segment_id = f"{stream_id}-{index:05d}"
        supervisions.append(
            SupervisionSegment(
                id=segment_id,
                recording_id=stream_id,
                start=position / rate,
                duration=len(audio) / rate,
                text=_text(cut),
                language=cut.supervisions[0].language if cut.supervisions else None,
                custom={"source_cut": cut.id},
            )
        )
        segments.append(cut.with_id(segment_id))
        position += len(audio)
    path = (audio_dir / f"{stream_id}.flac").resolve()
    soundfile.write(path, np.concatenate(pieces), rate, subtype="PCM_16")  # int16 in: 16-bit sources copied exactly
    stream = Recording.from_file(path, recording_id=stream_id).to_cut()
    return fastcopy(stream, id=stream_id, supervisions=supervisions), segments


def recording_groups(cuts: Sequence[Cut], minutes: float) -> list[list[Cut]]:
    """Consecutive segments of each recording, split at an overlap or where a stream would pass ``minutes``;
    groups of two segments or more."""
    by_recording = defaultdict(list)
    for cut in cuts:
        if isinstance(cut, MonoCut) and cut.has_recording:
            by_recording[cut.recording.id].append(cut)
    groups = []
    for segments in by_recording.values():
        segments.sort(key=lambda c: c.start)
        group = [segments[0]]
        for cut in segments[1:]:
            if cut.start < group[-1].end or cut.end - group[0].start > minutes * 60.0:
                groups.append(group)
                group = []
            group.append(cut)
        groups.append(group)
    return [g for g in groups if len(g) >= 2]


def recording_stream(group: Sequence[Cut]) -> MonoCut:
    """One cut from the first segment's start to the last one's end, every segment's supervisions moved into it."""
    first = group[0]
    supervisions = [
        fastcopy(s, start=s.start + cut.start - first.start) for cut in group for s in cut.supervisions if s.text
    ]
    stream_id = f"{first.recording.id}-{round(first.start * 1000):09d}"
    return MonoCut(
        id=stream_id,
        start=first.start,
        duration=group[-1].end - first.start,
        channel=first.channel,
        recording=first.recording,
        supervisions=supervisions,
    )


def build_long_form(
    source: str | Path,
    output_dir: str | Path,
    mode: str,
    minutes: float,
    streams: int,
    gap_s: Sequence[float],
    seed: int,
) -> dict:
    """Write ``cuts.jsonl.gz``, ``segments.jsonl.gz`` and ``summary.json`` under ``output_dir``; returns the
    summary. The settings are checked already (``data_prep.checks.LONG_FORM``, or the corpus's ``long_form`` rows);
    raises :class:`DataPrepError` for a source they cannot make streams of, before anything is written."""
    # the same streams whatever the manifest order and the checkout's path (which the cut ids hash)
    cuts = in_content_order(CutSet.from_file(source))
    if not cuts:
        raise DataPrepError(f"source={source}: no cuts")
    output_dir = Path(output_dir)
    (output_dir / "audio").mkdir(parents=True, exist_ok=True)
    if mode == "joined":
        plans = plan_joined(cuts, minutes, streams, gap_s, random.Random(seed))
        written = [write_joined(p, f"stream{i:03d}", output_dir / "audio") for i, p in enumerate(plans)]
        stream_cuts, segments = [w[0] for w in written], [s for w in written for s in w[1]]
    else:
        groups = recording_groups(cuts, minutes)
        if not groups:
            raise DataPrepError(f"source={source}: no recording has two consecutive segments (mode=recordings)")
        stream_cuts, segments = [recording_stream(g) for g in groups], [c for g in groups for c in g]
    CutSet.from_cuts(stream_cuts).to_file(output_dir / "cuts.jsonl.gz")
    CutSet.from_cuts(segments).to_file(output_dir / "segments.jsonl.gz")
    summary = {
        "source": str(source),
        "mode": mode,
        "minutes": minutes,
        "gap_s": list(gap_s) if mode == "joined" else None,
        "seed": seed,
        "streams": [
            {
                "id": c.id,
                "seconds": round(c.duration, 3),
                "utterances": len(c.supervisions),
                "words": sum(len(s.text.split()) for s in c.supervisions),
            }
            for c in stream_cuts
        ],
        "outputs": {"cuts": str(output_dir / "cuts.jsonl.gz"), "segments": str(output_dir / "segments.jsonl.gz")},
    }
    write_json(output_dir / "summary.json", summary)
    return summary


def corpus_entries(entries: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """A corpus config's ``long_form: {name: {split, mode, minutes, streams, gap_s, seed}}`` (checked by its
    schema), with the defaults filled in."""
    return {name: {**defaults(), **entry} for name, entry in (entries or {}).items()}


def build_corpus_long_forms(corpus_dir: Path, entries: Mapping[str, Mapping]) -> dict:
    """Each of :func:`corpus_entries`' streams built from ``<corpus_dir>/<split>/cuts.jsonl.gz`` into
    ``<corpus_dir>/<name>/``; returns ``{name: summary}``."""
    return {
        name: build_long_form(
            corpus_dir / entry["split"] / "cuts.jsonl.gz",
            corpus_dir / name,
            **{k: v for k, v in entry.items() if k != "split"},
        )
        for name, entry in entries.items()
    }


def report(summary: dict) -> str:
    seconds = sum(s["seconds"] for s in summary["streams"])
    words = sum(s["words"] for s in summary["streams"])
    return (
        f"{len(summary['streams'])} {summary['mode']} stream(s), {seconds / 60:.1f} min, {words} words "
        f"-> {summary['outputs']['cuts']} (one by one: {summary['outputs']['segments']})"
    )


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="long_form")
@exit_on_usage_error("data_prep.long_form")
def main(cfg: DictConfig) -> None:
    LONG_FORM.check(cfg, DataPrepError)
    conf = resolve_config(cfg)
    options = {key: conf[key] for key in OPTIONS}
    print(report(build_long_form(conf["source"], conf["output_dir"], **options)))


if __name__ == "__main__":
    run_hydra_main(main, "data_prep.long_form")
