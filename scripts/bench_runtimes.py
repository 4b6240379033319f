"""WER and real-time factor of one model in three streaming runtimes, on the demo dev sets, at every lookahead:

    python -m scripts.bench_runtimes --model models/demo_base.nemo [--utterances 150] [--out exp/bench_runtimes]

The PyTorch streaming engine (``recipes.streaming``), this project's onnxruntime decoder of the ONNX export
(``recipes.export.onnx_streaming``: its tokens must be the engine's, the table counts the utterances where they are
not) and ``sherpa_onnx.OnlineRecognizer`` on the same files, fp32 and int8. Prints the markdown table of
docs/export.md and writes the figures to ``<out>/runtimes.json``. One thread per runtime.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from recipes.errors import exit_on_usage_error
from recipes.evaluate.sets import load_eval_set
from recipes.export.onnx import export_onnx
from recipes.export.onnx_streaming import compare_runtimes, runtime_table
from recipes.model_files import load_model

DEV_SETS = {
    "target_dev": "data/prepared/demo_target/dev/cuts.jsonl.gz",
    "general_dev": "data/prepared/demo_general/dev/cuts.jsonl.gz",
}


@exit_on_usage_error("scripts.bench_runtimes")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/demo_base.nemo")
    parser.add_argument("--utterances", type=int, default=None, help="a fixed random subset per set (default: all)")
    parser.add_argument("--out", default="exp/bench_runtimes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    out = Path(args.out)
    export_onnx(model, out / "onnx", int8=True)
    sets = [load_eval_set(name, path, args.utterances) for name, path in DEV_SETS.items()]
    report = compare_runtimes(model, out / "onnx", sets)
    (out / "runtimes.json").write_text(json.dumps(report, indent=1))
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.model}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread\n"
    )
    print(runtime_table(report))


if __name__ == "__main__":
    main()
