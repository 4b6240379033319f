"""Shards: the unit of parallel work and of resume.

The candidates of a split are cut, in input order, into shards of ``shar.shard_size`` rows. A worker takes
one shard: reads headers, locates and filters each row, and writes the survivors with Lhotse's
``SharWriter`` (which decodes each cut's audio exactly once). Rows whose audio fails to decode are set aside
there. When the shard is complete, the worker writes its kept cuts and a marker holding a fingerprint of
the shard's rows and settings; a later run that computes the same fingerprint reuses the shard as it is.

Layout of one split::

    <split>/shar/cuts.000007.jsonl.gz, recording.000007.tar   Lhotse Shar, read by training
    <split>/.shards/000007.json                                marker: fingerprint, counts, rejects
    <split>/.shards/000007.cuts.jsonl.gz                       kept cuts pointing at the source audio
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lhotse.serialization import SequentialJsonlWriter
from lhotse.shar import SharWriter

from data_prep.audio import HeaderCache, audio_facts, build_cut, for_manifest, for_shar, to_target_format
from data_prep.errors import Rejected, one_line
from data_prep.filters import apply_filters
from data_prep.rows import Candidate, reject_entry
from data_prep.settings import AudioChecks
from recipes.run_dir import atomic_path, write_atomic

# Bump when the meaning of a shard's contents changes, so that old shards are redone.
SHARD_FORMAT_VERSION = 2  # 2: channels selected per row, down-mix at the loudest channel's level


@dataclass
class ShardJob:
    index: int
    candidates: list[Candidate]
    checks: AudioChecks
    shar_dir: Path
    work_dir: Path
    fingerprint: str


@dataclass
class ShardResult:
    index: int
    rows: int
    kept: int
    kept_seconds: float
    rejects: list[dict]
    reused: bool = False
    audio: dict[str, float] = field(default_factory=dict)  # seconds kept per audio_facts key


def plan(candidates: list[Candidate], shard_size: int) -> list[list[Candidate]]:
    """Consecutive rows, ``shard_size`` at most per shard; a shard never spans two tar files of a NeMo tarred
    input, so that a range of shards (a job-array task's part) reads a range of tar files."""
    shards = []
    for _, rows in itertools.groupby(candidates, key=lambda c: c.archive):
        rows = list(rows)
        shards += [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]
    return shards


def share(items: list, index: int, count: int) -> list:
    """The ``index``-th of ``count`` contiguous, near-equal ranges of ``items`` (some empty when count > len)."""
    return items[index * len(items) // count : (index + 1) * len(items) // count]


def fingerprint(candidates: list[Candidate], checks: AudioChecks) -> str:
    payload = {
        "version": SHARD_FORMAT_VERSION,
        "checks": dataclasses.asdict(checks),
        "rows": [dataclasses.asdict(c) for c in candidates],
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _marker(work_dir: Path, index: int) -> Path:
    return work_dir / f"{index:06d}.json"


def kept_cuts_path(work_dir: Path, index: int) -> Path:
    return work_dir / f"{index:06d}.cuts.jsonl.gz"


def shard_files(shar_dir: Path, index: int) -> list[Path]:
    return sorted(shar_dir.glob(f"*.{index:06d}.*"))


def reuse(job: ShardJob) -> ShardResult | None:
    """The finished result of this exact shard from an earlier run, or None."""
    try:
        marker = json.loads(_marker(job.work_dir, job.index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("fingerprint") != job.fingerprint or not kept_cuts_path(job.work_dir, job.index).is_file():
        return None
    if marker["kept"] and len(shard_files(job.shar_dir, job.index)) != 2:  # cuts + recording
        return None
    return ShardResult(
        job.index,
        marker["rows"],
        marker["kept"],
        marker["kept_seconds"],
        marker["rejects"],
        reused=True,
        audio=marker.get("audio", {}),
    )


def remove(shar_dir: Path, work_dir: Path, index: int) -> None:
    """Everything a shard left behind: its Shar files, marker, kept cuts and any partial file."""
    for path in [*work_dir.glob(f"{index:06d}.*"), *shard_files(shar_dir, index)]:
        path.unlink(missing_ok=True)


def init_worker() -> None:
    """One thread per worker process: the workers are the parallelism (torch would oversubscribe)."""
    import torch

    torch.set_num_threads(1)


def run(job: ShardJob) -> ShardResult:
    """Validate, filter and write one shard; returns its counts and rejects."""
    remove(job.shar_dir, job.work_dir, job.index)
    headers = HeaderCache()
    checks = job.checks
    rejects, kept, kept_seconds, audio = [], 0, 0.0, Counter()
    kept_path = kept_cuts_path(job.work_dir, job.index)
    with (
        atomic_path(kept_path) as partial,
        SharWriter(
            job.shar_dir,
            fields={"recording": checks.shar_format},
            shard_size=None,
            shard_suffix=f".{job.index:06d}",
        ) as shar,
        SequentialJsonlWriter(partial) as kept_writer,
    ):
        for cand in job.candidates:
            seconds = cand.seconds
            try:
                source = build_cut(cand, headers, checks.duration_tolerance)
                seconds = source.duration
                apply_filters(cand.text, cand.num_tokens, source.duration, checks.filters)
                try:
                    cut = to_target_format(source, checks.sample_rate, checks.telephone)  # a down-mix decodes
                    shar.write(for_shar(cut))
                except OSError:
                    raise  # a write failure on our side (disk full, ...) is not the row's fault
                except Exception as e:
                    raise Rejected("audio_undecodable", one_line(e)) from None
            except Rejected as r:
                rejects.append(reject_entry(cand.source, cand.line, r, seconds, cand.audio_path))
            else:
                kept_writer.write(for_manifest(cut, headers, cand))
                kept += 1
                kept_seconds += cut.duration
                audio.update(dict.fromkeys(audio_facts(source, checks.telephone), cut.duration))
    result = ShardResult(job.index, len(job.candidates), kept, kept_seconds, rejects, audio=dict(audio))
    marker = {"fingerprint": job.fingerprint, **dataclasses.asdict(result)}
    marker.pop("reused")
    write_atomic(_marker(job.work_dir, job.index), lambda tmp: tmp.write_text(json.dumps(marker), encoding="utf-8"))
    return result


def existing_indices(shar_dir: Path, work_dir: Path) -> set[int]:
    """Indices of shards that some earlier run left on disk (finished or not)."""
    found = set()
    for path in [*shar_dir.glob("*.*"), *work_dir.glob("*.*")]:
        for part in path.name.split("."):
            if len(part) == 6 and part.isdigit():
                found.add(int(part))
                break
    return found
