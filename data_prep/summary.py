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


def text_summary(text_cfg: dict, unencodable: Counter | None) -> dict:
    """The text policy as applied (``text.*``, the character map included) and, with a tokenizer, each character
    it cannot encode after that policy, with how often it occurs (null: no tokenizer, nothing checked)."""
    return {
        **text_cfg,
        "unencodable_characters": None if unencodable is None else dict(unencodable.most_common()),
    }


def audio_summary(seconds: dict[str, float], sample_rate: int, telephone: float) -> dict:
    """What became of the kept audio on its way to ``sample_rate`` mono (``seconds``: per
    :func:`data_prep.audio.audio_facts` key), in hours."""
    rates = {int(key.split("_")[1]): value for key, value in seconds.items() if key.startswith("from_")}
    return {
        "sample_rate": sample_rate,
        "policy": f"every recording is resampled to {sample_rate} Hz; lower rates are upsampled and keep their own "
        f"band (8 kHz telephone audio has nothing above 4 kHz)",
        "hours_by_source_rate": {str(rate): _hours(rates[rate]) for rate in sorted(rates)},
        "upsampled_hours": _hours(sum(value for rate, value in rates.items() if rate < sample_rate)),
        "down_mixed_hours": _hours(seconds.get("down_mixed", 0.0)),
        "channel_selected_hours": _hours(seconds.get("channel_selected", 0.0)),
        "telephone": {"share": telephone, "hours": _hours(seconds.get("telephone", 0.0))},
    }


def combine_audio(summaries: list[dict]) -> dict:
    """The corpus's :func:`audio_summary` from its splits'."""
    added = ("upsampled_hours", "down_mixed_hours", "channel_selected_hours")
    total = {**summaries[0], "hours_by_source_rate": {}, **dict.fromkeys(added, 0.0)}
    total["telephone"] = {**summaries[0]["telephone"], "hours": 0.0}
    for s in summaries:
        for rate, hours in s["hours_by_source_rate"].items():
            total["hours_by_source_rate"][rate] = round(total["hours_by_source_rate"].get(rate, 0.0) + hours, 4)
        for key in added:
            total[key] = round(total[key] + s[key], 4)
        total["telephone"]["hours"] = round(total["telephone"]["hours"] + s["telephone"]["hours"], 4)
    return total


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
