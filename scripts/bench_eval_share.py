"""What share of a fine-tuning run the after-checkpoint streaming evaluation takes.

    python -m scripts.bench_eval_share [experiment=demo_finetune] [any other recipes.finetune override ...]

Runs the same fine-tuning twice, one after the other, from scratch: as configured, and with the checkpoint
callback's evaluation off (``callbacks.checkpoint.eval_sets={}``), and prints both wall times, the evaluation's
share of the first ((with - without) / with: evaluation, reports and plots together) and the evaluation seconds
that the callback itself recorded in its reports. The goal is <= 10 %.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

from recipes.config import REPO
from recipes.errors import exit_on_usage_error

GOAL = 0.10


def finetune(run_name: str, overrides: list[str]) -> float:
    """Wall seconds of ``python -m recipes.finetune`` in a fresh run directory."""
    shutil.rmtree(REPO / "exp" / run_name, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "recipes.finetune", *overrides, f"run_name={run_name}", "resume=false"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if run.returncode:
        sys.exit(f"recipes.finetune failed for {run_name}:\n{run.stderr[-4000:]}")
    return time.perf_counter() - start


def recorded_eval_seconds(run_name: str) -> list[float]:
    reports = sorted((REPO / "exp" / run_name / "checkpoints").glob("step*.ckpt.stream_wer.json"))
    return [json.loads(path.read_text())["eval_seconds"] for path in reports]


@exit_on_usage_error("scripts.bench_eval_share")
def main(argv: list[str]) -> None:
    overrides = argv if any(a.startswith("experiment=") for a in argv) else ["experiment=demo_finetune", *argv]
    print(
        f"# after-checkpoint evaluation share, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {' '.join(overrides)}"
    )
    with_eval = finetune("bench_eval_share_on", overrides)
    without = finetune("bench_eval_share_off", [*overrides, "callbacks.checkpoint.eval_sets={}"])
    evals = recorded_eval_seconds("bench_eval_share_on")
    share = (with_eval - without) / with_eval
    print(
        f"- run with evaluation:    {with_eval:7.1f} s ({len(evals)} evaluations, "
        f"{', '.join(f'{s:.1f}' for s in evals)} s as the callback recorded them)"
    )
    print(f"- run without evaluation: {without:7.1f} s")
    print(
        f"- evaluation share: {share:.1%} of the run (goal <= {GOAL:.0%}: {'met' if share <= GOAL else 'MISSED'}); "
        f"recorded evaluation seconds alone: {sum(evals) / with_eval:.1%}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
