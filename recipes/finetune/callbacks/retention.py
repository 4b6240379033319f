"""Which checkpoints a run keeps on disk: a 0.6B checkpoint is 2.3 GiB of weights, 6.9 GiB with AdamW's state.

After each checkpoint is written and streamed, :func:`prune_checkpoints` deletes the step checkpoints that are
neither among the newest ``keep_last`` nor among the ``keep_best`` with the lowest streaming WER (``rank_by``: a dev
set at a lookahead, from the ``<checkpoint>.stream_wer.json`` reports). The reports stay, so the run's table and plot
still show every checkpoint. ``last.ckpt`` is never pruned: it is what a run resumes from, and the one checkpoint that
holds the optimizer's state (the others hold weights only, for evaluation, averaging and export).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from recipes.evaluate.reports import BASE_REPORT, REPORT_SUFFIX
from recipes.export.checkpoints import RankBy

log = logging.getLogger(__name__)

KEEP_ALL = -1


def reported_checkpoints(dirpath: Path) -> list[tuple[int, Path]]:
    """``(step, checkpoint)`` of every step checkpoint in ``dirpath`` with a report, oldest first (``last.ckpt``,
    SLURM's ``hpc_ckpt_*`` and the base report left out)."""
    found = []
    for report in Path(dirpath).glob(f"*{REPORT_SUFFIX}"):
        checkpoint = report.with_name(report.name.removesuffix(REPORT_SUFFIX))
        if checkpoint.name.startswith(("last", "hpc_ckpt", BASE_REPORT)) or not checkpoint.is_file():
            continue
        found.append((int(json.loads(report.read_text())["step"]), checkpoint))
    return sorted(found)


def checkpoints_to_prune(dirpath: Path, keep_last: int, keep_best: int, rank_by: RankBy) -> list[Path]:
    """The step checkpoints outside the newest ``keep_last`` (-1: all) and the ``keep_best`` best by ``rank_by``."""
    checkpoints = reported_checkpoints(dirpath)
    if keep_last == KEEP_ALL:
        return []
    kept = {path for _, path in checkpoints[-keep_last:]} if keep_last else set()
    ranked = sorted((rank_by.score(path), -step, path) for step, path in checkpoints)
    kept |= {path for _, _, path in ranked[:keep_best]}
    return [path for _, path in checkpoints if path not in kept]


def prune_checkpoints(dirpath: Path, keep_last: int, keep_best: int, rank_by: RankBy) -> list[Path]:
    """Delete :func:`checkpoints_to_prune` (their reports stay); returns what was deleted."""
    pruned = checkpoints_to_prune(dirpath, keep_last, keep_best, rank_by)
    for path in pruned:
        path.unlink()
    if pruned:
        log.info(
            "Checkpoints kept: the newest %d and the best %d by %s; deleted %s",
            keep_last,
            keep_best,
            rank_by,
            ", ".join(p.name for p in pruned),
        )
    return pruned
