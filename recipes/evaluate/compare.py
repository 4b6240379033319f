"""Print streaming-WER tables from evaluation reports, one row per report:

python -m recipes.evaluate.compare base=exp/demo/base_wer.json fine-tuned=exp/demo/finetuned_wer.json

Long-form sets scored with their one-by-one twin (``<name>`` and ``<name>_one_by_one``) get a table of their own:
the stream's WER beside the same utterances' isolated, and the ratio.
"""

import json
import sys
from pathlib import Path

from recipes.errors import UsageError, exit_on_usage_error
from recipes.evaluate.reports import LONG_FORM_CAPTION, long_form_table, split_long_form, wer_table

USAGE = "usage: python -m recipes.evaluate.compare <label>=<report.json> [<label>=<report.json> ...]"


def read_rows(argv: list[str]) -> dict[str, dict]:
    """``{label: report["sets"]}`` from ``label=path`` arguments (reports written by ``recipes.evaluate``)."""
    if not argv:
        raise UsageError(f"no reports given: {USAGE}")
    rows = {}
    for arg in argv:
        label, _, path = arg.partition("=")
        if not label or not path:
            raise UsageError(f"{arg}: not <label>=<report.json>: {USAGE}")
        try:
            rows[label] = json.loads(Path(path).read_text())["sets"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(
                f"{label}={path}: not a readable evaluation report ({type(err).__name__}): "
                "give a JSON file written by python -m recipes.evaluate ... output=<file>"
            ) from None
    return rows


@exit_on_usage_error("recipes.evaluate.compare")
def main(argv: list[str]) -> None:
    rows = read_rows(argv)
    short = {label: split_long_form(per_set)[0] for label, per_set in rows.items()}
    print("Streaming WER (%), as written:\n")
    print(wer_table(short))
    print("\nStreaming WER (%), normalised (Whisper English normaliser):\n")
    print(wer_table(short, key="wer_normalized"))
    long_form = long_form_table(rows)
    if long_form:
        print(f"\n{LONG_FORM_CAPTION}\n")
        print(long_form)


if __name__ == "__main__":
    main(sys.argv[1:])
