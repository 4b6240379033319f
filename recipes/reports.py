"""Tables of streaming WER: rows are models or checkpoints, columns are set x lookahead."""
from __future__ import annotations


def wer_table(rows: dict[str, dict[str, dict[str, dict]]], key: str = "wer") -> str:
    """Markdown table from ``{row label: {set: {"<ms>ms": {"wer": ...}}}}`` (the ``sets`` of a report), WER in %."""
    columns = []
    for per_set in rows.values():
        for name, by_lookahead in per_set.items():
            for lookahead in sorted(by_lookahead, key=lambda k: int(k.removesuffix("ms"))):
                if (name, lookahead) not in columns:
                    columns.append((name, lookahead))
    lines = ["| model | " + " | ".join(f"{name} @{la}" for name, la in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for label, per_set in rows.items():
        cells = [f"{100 * per_set[n][la][key]:.1f}" if la in per_set.get(n, {}) else "-" for n, la in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
