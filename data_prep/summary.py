"""Accounting: rows and hours in, kept and rejected by reason, and the check that nothing went missing."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from data_prep.errors import REASONS, DataPrepError
from recipes.run_dir import write_atomic


def _hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def split_summary(split: str, rows_in: int, kept: int, kept_seconds: float, rejects: list[dict], **extra) -> dict:
    """The summary of one split. Raises :class:`DataPrepError` unless every row read is either kept or
    rejected exactly once (``in == kept + rejected``), so a run never reports success over lost rows."""
    rows = Counter(r["reason"] for r in rejects)
    seconds = defaultdict(float)
    for r in rejects:
        seconds[r["reason"]] += r["seconds"]
    rejected_seconds = sum(seconds.values())
    if rows_in != kept + len(rejects):
        raise DataPrepError(
            f"accounting error in split {split!r}: {rows_in} rows read, {kept} kept + {len(rejects)} rejected"
        )
    return {
        "split": split,
        "rows": {"in": rows_in, "kept": kept, "rejected": len(rejects)},
        "hours": {
            # Rows rejected before their audio was read count with their declared duration (0 if none).
            "in": _hours(kept_seconds + rejected_seconds),
            "kept": _hours(kept_seconds),
            "rejected": _hours(rejected_seconds),
        },
        "rejected_by_reason": {
            reason: {"rows": rows[reason], "hours": _hours(seconds[reason])} for reason in REASONS if rows[reason]
        },
        **extra,
    }


def feasibility_summary(settings) -> dict:
    """Which ``rnnt_infeasible`` rule ran (``ctc``: frames >= tokens; ``rnnt``: tokens <= max_symbols x frames;
    null: none, no tokenizer) and why."""
    f = settings.audio.filters
    return {
        "rule": f.feasibility.rule,
        "max_symbols": f.feasibility.max_symbols,
        "why": f.feasibility.why,
        "encoder_frame_s": f.encoder_frame_s,
    }


def corpus_summary(corpus: str, splits: dict[str, dict], config: dict, **extra) -> dict:
    total = {"in": 0, "kept": 0, "rejected": 0}
    hours = {"in": 0.0, "kept": 0.0, "rejected": 0.0}
    for s in splits.values():
        for key in total:
            total[key] += s["rows"][key]
            hours[key] = round(hours[key] + s["hours"][key], 4)
    return {
        "corpus": corpus,
        "status": "ok",
        "rows": total,
        "hours": hours,
        "splits": splits,
        **extra,
        "config": config,
    }


def write_json(path: Path, data: dict) -> None:
    write_atomic(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    )
