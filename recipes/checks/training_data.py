"""Data that cannot train stops before the loader is built: at least one training cut must pass NeMo's duration
filter (``data.train_ds.min_duration <= duration <= data.train_ds.max_duration``) and fit the batch budget
(``<= data.train_ds.batch_duration``).

Without this, a filter that keeps nothing makes Lhotse's endlessly repeated Shar stream filter forever: the loader
never yields and the run sits at 100 % CPU. The cuts are read from the manifests' JSON lines (no audio), and the
scan stops at the first cut that passes; when none does, the message counts what each key removed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

SCAN_LIMIT = 100_000  # cuts read per manifest when none passes (enough to tell; a whole corpus can take minutes)
FILTERS = ("min_duration", "max_duration", "batch_duration")


def manifests(train_ds: dict) -> list[Path]:
    """The cut manifests (Lhotse cuts or NeMo JSON manifests) the training loader reads: its ``cuts_path``,
    ``shar_path`` (every ``cuts.*.jsonl.gz`` shard) or ``manifest_filepath``, or those of every ``input_cfg`` entry
    with a weight above 0 (nested groups included)."""
    entries = train_ds.get("input_cfg")
    if isinstance(entries, str):
        entries = yaml.safe_load(Path(entries).read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        entries = [train_ds]
    paths = []
    for entry in entries:
        if not isinstance(entry, dict) or (entry.get("weight") is not None and entry["weight"] <= 0):
            continue
        if entry.get("input_cfg") is not None and entry is not train_ds:
            paths += manifests(entry)
        if isinstance(entry.get("shar_path"), str):
            paths += sorted(Path(entry["shar_path"]).glob("cuts.*.jsonl*"))
        paths += [Path(entry[k]) for k in ("cuts_path", "manifest_filepath") if isinstance(entry.get(k), str)]
    return [path for path in paths if path.is_file()]


def durations(path: Path) -> Iterator[float]:
    """The ``duration`` of each line of a (gzipped) JSONL manifest, at most :data:`SCAN_LIMIT`."""
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        for count, line in enumerate(f):
            if count >= SCAN_LIMIT:
                return
            try:
                yield float(json.loads(line)["duration"])
            except (ValueError, KeyError, TypeError):
                continue


def removed_by(duration: float, limits: dict[str, float]) -> str | None:
    """Which filter key removes a cut of ``duration`` seconds (the first that does, in NeMo's order), or None."""
    if duration < limits["min_duration"]:
        return "min_duration"
    if duration > limits["max_duration"]:
        return "max_duration"
    return "batch_duration" if duration > limits["batch_duration"] else None


def training_cut_problems(cfg: DictConfig) -> list[str]:
    """None when a training cut passes the filters; else one line naming the filter keys and what each removed."""
    train_ds: dict[str, Any] = OmegaConf.to_container(cfg.data.train_ds, resolve=True)
    limits = {
        "min_duration": train_ds.get("min_duration") if train_ds.get("min_duration") is not None else -1.0,
        "max_duration": train_ds.get("max_duration") if train_ds.get("max_duration") is not None else float("inf"),
        "batch_duration": train_ds.get("batch_duration") or float("inf"),
    }
    removed = dict.fromkeys(FILTERS, 0)
    seen: list[float] = []
    sources = manifests(train_ds)
    for path in sources:
        for duration in durations(path):
            reason = removed_by(duration, limits)
            if reason is None:
                return []
            removed[reason] += 1
            seen.append(duration)
    if not seen:
        return []  # nothing readable here (e.g. tarred data): the loader's watchdog still stops a silent loader
    worst = max(FILTERS, key=lambda name: removed[name])
    counts = ", ".join(f"data.train_ds.{name}={limits[name]:g} removed {removed[name]}" for name in FILTERS)
    return [
        f"data.train_ds.{worst}={limits[worst]:g}: no training cut is left: of {len(seen)} cuts "
        f"({min(seen):.2f}-{max(seen):.2f} s, read from {len(sources)} manifest(s)) {counts}: "
        f"widen these filters to keep the durations you have"
    ]
