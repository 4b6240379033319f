"""Which checkpoint of a run to export: by name or path, the best by a streaming WER, or an average of several.

Rankings read the ``<checkpoint>.stream_wer.json`` reports ``StreamingEvalCheckpoint`` writes beside each checkpoint
(a named dev set at a named lookahead), not the validation loss. An average is written as a checkpoint of its own in
``<run_dir>/averaged/`` (``<run_dir>/run_config.yaml`` still describes it, so evaluation and export load it like any
other), streamed on the run's dev sets and reported beside itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from recipes.errors import UsageError
from recipes.evaluate.reports import REPORT_SUFFIX, update_run_reports, write_report
from recipes.evaluate.run import evaluate_model
from recipes.evaluate.sets import EvalSet, load_eval_set
from recipes.model_files import load_model
from recipes.run_dir import (
    RUN_CONFIG,  # a name or path, checked readable
    write_atomic,
)

log = logging.getLogger(__name__)

AVERAGED_DIR = "averaged"


def run_config(run_dir: str | Path) -> DictConfig:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise UsageError(f"run_dir={run_dir}: no {RUN_CONFIG} there (give the directory of a fine-tuning run)")
    return OmegaConf.load(path)


def run_dev_sets(run_dir: str | Path, max_utterances: int | None = None) -> list[EvalSet]:
    """The dev sets the run streamed after every checkpoint (its ``callbacks.checkpoint.eval_sets``)."""
    sets = run_config(run_dir).callbacks.checkpoint.eval_sets
    if not sets:
        raise UsageError(f"run_dir={run_dir}: the run has no streaming dev sets (callbacks.checkpoint.eval_sets)")
    return [load_eval_set(name, path, max_utterances) for name, path in sets.items()]


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint the run kept, oldest first; ``last.ckpt`` (a copy of the newest) and
    SLURM's ``hpc_ckpt_*`` are left out."""
    found = []
    # [!.]: not a write in progress (recipes.run_dir.atomic_path)
    for path in sorted((Path(run_dir) / "checkpoints").glob("[!.]*.ckpt")):
        if path.name.startswith(("last", "hpc_ckpt")):
            continue
        found.append((int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"]), path))
    return sorted(found)


@dataclass(frozen=True)
class RankBy:
    """A checkpoint's score: ``metric`` (``wer`` or ``wer_normalized``) of dev set ``set`` at ``lookahead_ms``."""

    set: str
    lookahead_ms: int
    metric: str = "wer"

    def score(self, checkpoint: Path) -> float | None:
        """The checkpoint's score from its report; None without a report."""
        report_path = Path(f"{checkpoint}{REPORT_SUFFIX}")
        if not report_path.is_file():
            return None
        sets = json.loads(report_path.read_text())["sets"]
        if self.set not in sets:
            raise UsageError(f"rank_by.set={self.set}: not in {report_path} (its sets: {', '.join(sets)})")
        key = f"{self.lookahead_ms}ms"
        if key not in sets[self.set]:
            raise UsageError(
                f"rank_by.lookahead_ms={self.lookahead_ms}: not in {report_path} "
                f"(its lookaheads: {', '.join(sets[self.set])})"
            )
        return float(sets[self.set][key][self.metric])


def last_checkpoints(run_dir: str | Path, num: int) -> list[Path]:
    kept = step_checkpoints(run_dir)
    if not kept:
        raise UsageError(f"run_dir={run_dir}: no checkpoints in {Path(run_dir) / 'checkpoints'}")
    return [path for _, path in kept[-num:]]


def best_checkpoints(run_dir: str | Path, rank_by: RankBy, num: int) -> list[Path]:
    """The ``num`` checkpoints with the lowest score (the later one first on a tie), best first."""
    scored = [
        (score, -step, path) for step, path in step_checkpoints(run_dir) if (score := rank_by.score(path)) is not None
    ]
    if not scored:
        raise UsageError(f"run_dir={run_dir}: no checkpoint has a {REPORT_SUFFIX} report to rank by")
    best = sorted(scored)[:num]
    log.info("best %d by %s: %s", num, rank_by, ", ".join(f"{p.name} ({s:.4f})" for s, _, p in best))
    return [path for _, _, path in best]


def average_state_dicts(state_dicts: Sequence[dict]) -> dict:
    """Mean of every floating-point tensor (accumulated in float64, stored in its own dtype); integer and boolean
    tensors (step counters such as BatchNorm's ``num_batches_tracked``) are taken from the last state dict as they
    are, since a mean of counters means nothing."""
    last = state_dicts[-1]
    averaged = {}
    for name, value in last.items():
        if torch.is_tensor(value) and value.is_floating_point():
            total = sum(sd[name].double() for sd in state_dicts)
            averaged[name] = (total / len(state_dicts)).to(value.dtype)
        else:
            averaged[name] = value
    return averaged


def average_checkpoints(paths: Sequence[Path], output: Path) -> Path:
    """Write the average of ``paths`` as a checkpoint ``recipes.model_files.load_model`` loads (weights only: it is
    for evaluation and export, not for resuming training). Written to a temporary name, then renamed. The inputs are
    memory-mapped: only the average is held in memory (and no optimizer state is read)."""
    checkpoints = [torch.load(p, map_location="cpu", weights_only=False, mmap=True) for p in paths]
    average = {
        "state_dict": average_state_dicts([c["state_dict"] for c in checkpoints]),
        "global_step": max(int(c["global_step"]) for c in checkpoints),
        "epoch": max(int(c.get("epoch", 0)) for c in checkpoints),
        "averaged_from": [str(p) for p in paths],
    }
    write_atomic(output, lambda tmp: torch.save(average, tmp))
    log.info("averaged %s -> %s", ", ".join(p.name for p in paths), output)
    return output


def report_checkpoint(run_dir: str | Path, checkpoint: Path, extra: dict | None = None, model=None) -> Path:
    """Stream ``checkpoint`` (``model``: already loaded from it) as the run's checkpoint callback streams its
    checkpoints (same dev sets, lookaheads and subsets), write ``<checkpoint>.stream_wer.json`` and redraw the table
    and plot of its directory."""
    callback = run_config(run_dir).callbacks.checkpoint
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    report = evaluate_model(
        model if model is not None else load_model(str(checkpoint)),
        OmegaConf.to_container(callback.eval_sets),
        OmegaConf.to_container(callback.lookaheads),
        callback.max_utterances,
        callback.batch_size,
    )
    path = write_report(
        {"step": int(ckpt["global_step"]), "checkpoint": str(checkpoint), **(extra or {}), **report},
        f"{checkpoint}{REPORT_SUFFIX}",
    )
    update_run_reports(checkpoint.parent)
    return path
