"""Tables and plots of streaming WER: rows are models or checkpoints, columns are set x lookahead."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from recipes.run_dir import write_atomic

log = logging.getLogger(__name__)

REPORT_SUFFIX = ".stream_wer.json"
BASE_REPORT = "base"  # base.stream_wer.json: the model as fine-tuning started, scored like its checkpoints
RUN_TABLE = "stream_wer.md"
RUN_PLOT = "stream_wer.png"
# A long-form set <name> scored beside <name>_one_by_one (data_prep.long_form's segments.jsonl.gz: the same
# utterances isolated) gets its stream / one-by-one ratio in the long-form table.
ONE_BY_ONE = "_one_by_one"
LONG_FORM_CAPTION = "Long-form streams, WER (%) as written: the stream / the same utterances one by one (ratio):"


def lookahead_key_ms(key: str) -> int:
    return int(key.removesuffix("ms"))


def _columns(rows: dict[str, dict[str, dict[str, dict]]]) -> list[tuple[str, str]]:
    columns = []
    for per_set in rows.values():
        for name, by_lookahead in per_set.items():
            for lookahead in sorted(by_lookahead, key=lookahead_key_ms):
                if (name, lookahead) not in columns:
                    columns.append((name, lookahead))
    return columns


def wer_table(rows: dict[str, dict[str, dict[str, dict]]], key: str = "wer", label: str = "model") -> str:
    """Markdown table from ``{row label: {set: {"<ms>ms": {"wer": ...}}}}`` (the ``sets`` of a report), WER in %."""
    columns = _columns(rows)
    lines = [
        f"| {label} | " + " | ".join(f"{name} @{la}" for name, la in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row, per_set in rows.items():
        cells = [f"{100 * per_set[n][la][key]:.1f}" if la in per_set.get(n, {}) else "-" for n, la in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def split_long_form(per_set: dict[str, dict]) -> tuple[dict[str, dict], dict[str, tuple[dict, dict]]]:
    """(the short sets, ``{name: (stream, one by one)}`` for every long-form set scored with its one-by-one twin)."""
    pairs = {n: (per_set[n], per_set[n + ONE_BY_ONE]) for n in per_set if n + ONE_BY_ONE in per_set}
    short = {n: v for n, v in per_set.items() if n not in pairs and n.removesuffix(ONE_BY_ONE) not in pairs}
    return short, pairs


def long_form_table(rows: dict[str, dict[str, dict[str, dict]]], key: str = "wer", label: str = "model") -> str:
    """Markdown, one row per report and long-form set: per lookahead the WER (%) of the continuous stream, of the
    same utterances one by one, and their ratio (the long-form goal is a ratio near 1); empty without such sets."""
    pairs = {row: split_long_form(per_set)[1] for row, per_set in rows.items()}
    lookaheads = sorted({la for p in pairs.values() for s, _ in p.values() for la in s}, key=lookahead_key_ms)
    if not any(pairs.values()):
        return ""
    lines = [
        f"| {label} | long-form set | " + " | ".join(f"@{la}: stream / one by one" for la in lookaheads) + " |",
        "|---|---|" + "---:|" * len(lookaheads),
    ]
    for row, by_name in pairs.items():
        for name, (stream, isolated) in by_name.items():
            cells = []
            for la in lookaheads:
                if la not in stream or la not in isolated:
                    cells.append("-")
                    continue
                a, b = stream[la][key], isolated[la][key]
                ratio = f" ({a / b:.2f}x)" if b else ""
                cells.append(f"{100 * a:.1f} / {100 * b:.1f}{ratio}")
            lines.append(f"| {row} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(entry: dict, key: str, scale: float = 1.0, digits: int = 0) -> str:
    value = entry.get(key)
    return "-" if value is None else f"{scale * value:.{digits}f}"


def latency_table(sets: dict[str, dict[str, dict]]) -> str:
    """Markdown table of one report's latencies and speed, one row per set and lookahead."""
    lines = [
        "| set | chunk | algorithmic ms | step ms p50 / p95 | first token ms p50 / p95 | "
        "final ms p50 / p95 | RTF | offline token diffs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_lookahead in sets.items():
        for key in sorted(by_lookahead, key=lookahead_key_ms):
            e = by_lookahead[key]
            lines.append(
                f"| {name} | {key} | {e.get('algorithmic_latency_ms', '-')} | "
                f"{_cell(e, 'chunk_step_seconds_p50', 1e3, 1)} / {_cell(e, 'chunk_step_seconds_p95', 1e3, 1)} | "
                f"{_cell(e, 'first_token_latency_s_p50', 1e3)} / {_cell(e, 'first_token_latency_s_p95', 1e3)} | "
                f"{_cell(e, 'final_latency_s_p50', 1e3, 1)} / {_cell(e, 'final_latency_s_p95', 1e3, 1)} | "
                f"{_cell(e, 'rtf', 1.0, 4)} | {e.get('offline_token_differences', '-')} |"
            )
    return "\n".join(lines)


def read_run_reports(checkpoint_dir: str | Path) -> list[dict]:
    """Every ``<checkpoint>.stream_wer.json`` in ``checkpoint_dir``, one per training step, ordered by step.
    ``last.ckpt`` repeats a step that has its own checkpoint and is only kept when it is the sole report of it;
    unreadable files (e.g. being written by another process) are skipped with a warning."""
    by_step: dict[int, dict] = {}
    for path in sorted(Path(checkpoint_dir).glob(f"*{REPORT_SUFFIX}")):
        try:
            report = json.loads(path.read_text())
            step = int(report["step"])
            report["sets"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("skipping streaming report %s: %s", path, err)
            continue
        report["_name"] = path.name.removesuffix(REPORT_SUFFIX)
        if step not in by_step or by_step[step]["_name"].startswith("last"):
            by_step[step] = report
    return [by_step[step] for step in sorted(by_step)]


def _row_label(report: dict) -> str:
    return "base (before training)" if report.get("base") else f"step {report['step']} ({report['_name']})"


def change_table(base: dict, last: dict, label: str) -> str:
    """Markdown, one row per set and lookahead: the base's WER, ``last``'s and the relative change (negative =
    better): the target gain and the general loss of a fine-tuning run."""
    lines = [f"| set | lookahead | base WER (%) | {label} WER (%) | change vs base |", "|---|---:|---:|---:|---:|"]
    for name, by_lookahead in last.items():
        for key in sorted(by_lookahead, key=lookahead_key_ms):
            if key in base.get(name, {}):
                before, after = base[name][key]["wer"], by_lookahead[key]["wer"]
                change = f"{100 * (after / before - 1):+.0f} %" if before else "-"
                lines.append(f"| {name} | {key} | {100 * before:.1f} | {100 * after:.1f} | {change} |")
    return "\n".join(lines)


def plot_wer_vs_latency(reports: list[dict], path: str | Path, key: str = "wer") -> Path:
    """One panel per dev set: WER (%) against chunk latency (ms), one line per checkpoint (darker = later)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = list(dict.fromkeys(name for report in reports for name in report["sets"]))
    fig = Figure(figsize=(4.5 * max(len(sets), 1), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(sets), 1), squeeze=False)[0]
    cmap = colormaps["viridis_r"]
    for ax, name in zip(axes, sets):
        latencies: set[int] = set()
        for index, report in enumerate(reports):
            by_lookahead = report["sets"].get(name, {})
            keys = sorted(by_lookahead, key=lookahead_key_ms)
            if not keys:
                continue
            xs = [by_lookahead[k].get("algorithmic_latency_ms", lookahead_key_ms(k)) for k in keys]
            ys = [100 * by_lookahead[k][key] for k in keys]
            latencies.update(xs)
            shade = cmap(0.15 + 0.85 * index / max(len(reports) - 1, 1))
            style = {"color": "black", "linestyle": "--"} if report.get("base") else {"color": shade}
            ax.plot(xs, ys, marker="o", label="base" if report.get("base") else f"step {report['step']}", **style)
        ax.set_xscale("log")
        ax.set_xticks(sorted(latencies), [str(x) for x in sorted(latencies)])
        ax.minorticks_off()
        ax.set_title(name)
        ax.set_xlabel("chunk latency (ms)")
        ax.set_ylabel("streaming WER (%)" if key == "wer" else "streaming WER, normalised (%)")
        ax.grid(alpha=0.3)
    lines = list(axes[-1].lines)
    if lines:  # with many checkpoints, name the first and the last; the shade orders the rest
        axes[-1].legend(handles=lines if len(lines) <= 12 else [lines[0], lines[-1]], fontsize="small")
    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path


def update_run_reports(checkpoint_dir: str | Path) -> list[Path]:
    """(Re)write ``stream_wer.md`` and ``stream_wer.png`` in ``checkpoint_dir`` from all the
    ``*.stream_wer.json`` written beside its checkpoints; returns the files written (none without reports)."""
    checkpoint_dir = Path(checkpoint_dir)
    reports = read_run_reports(checkpoint_dir)
    if not reports:
        return []
    rows = {_row_label(r): r["sets"] for r in reports}
    last = reports[-1]
    base = reports[0] if reports[0].get("base") else None
    change = (
        []
        if base is None or last is base
        else [
            f"## Change vs base at {_row_label(last)}",
            "",
            change_table(base["sets"], last["sets"], _row_label(last)),
            "",
        ]
    )
    text = "\n".join(
        [
            f"# Streaming WER per checkpoint: {checkpoint_dir}",
            "",
            f"Updated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {len(reports)} `*{REPORT_SUFFIX}` reports. "
            "Real cache-aware streaming, one column per dev set and chunk latency.",
            "",
            "## WER (%), as written (case and punctuation count)",
            "",
            wer_table(rows, label="checkpoint"),
            "",
            "## WER (%), normalised (Whisper English normaliser)",
            "",
            wer_table(rows, key="wer_normalized", label="checkpoint"),
            "",
            *change,
            f"## Latency and speed at {_row_label(last)}",
            "",
            latency_table(last["sets"]),
            "",
            f"![WER vs latency]({RUN_PLOT})",
            "",
        ]
    )
    table = checkpoint_dir / RUN_TABLE
    write_atomic(table, lambda tmp: tmp.write_text(text))
    return [table, plot_wer_vs_latency(reports, checkpoint_dir / RUN_PLOT)]


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path
