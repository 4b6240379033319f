"""Print a streaming-WER table from evaluation reports:  python -m recipes.evaluate.compare label=report.json ..."""

import json
import sys

from recipes.evaluate.reports import wer_table


def main(argv: list[str]) -> None:
    rows = {}
    for arg in argv:
        label, _, path = arg.partition("=")
        rows[label] = json.loads(open(path).read())["sets"]
    print("Streaming WER (%), as written:\n")
    print(wer_table(rows))
    print("\nStreaming WER (%), normalised (Whisper English normaliser):\n")
    print(wer_table(rows, key="wer_normalized"))


if __name__ == "__main__":
    main(sys.argv[1:])
