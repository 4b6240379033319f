"""Checkpoint retention: the newest K and the best K by a streaming WER stay on disk, the others go, reports stay.
(Weights-only step checkpoints and the pruning inside a real run: tests/test_standin.py.)"""

import json

import torch

from recipes.evaluate.reports import REPORT_SUFFIX
from recipes.export.checkpoints import RankBy
from recipes.finetune.callbacks.retention import KEEP_ALL, checkpoints_to_prune, prune_checkpoints
from recipes.finetune.resume import newest_complete_checkpoint

WER = {1: 0.5, 2: 0.2, 3: 0.4, 4: 0.3, 5: 0.6}  # best: step 2, then 4
BY = RankBy("dev", 1120)


def make_run(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for step, wer in WER.items():
        path = checkpoints / f"step{step:06d}.ckpt"
        torch.save({"state_dict": {}, "loops": {}, "global_step": step}, path)  # weights only: no optimizer state
        (checkpoints / f"{path.name}{REPORT_SUFFIX}").write_text(
            json.dumps({"step": step, "sets": {"dev": {"1120ms": {"wer": wer}}}})
        )
    torch.save({"state_dict": {}, "loops": {}, "optimizer_states": [], "global_step": 5}, checkpoints / "last.ckpt")
    (checkpoints / f"last.ckpt{REPORT_SUFFIX}").write_text(json.dumps({"step": 5, "sets": {}}))
    return checkpoints


def names(paths):
    return sorted(p.name for p in paths)


def test_the_newest_and_the_best_are_kept(tmp_path):
    checkpoints = make_run(tmp_path)
    assert checkpoints_to_prune(checkpoints, KEEP_ALL, 0, BY) == []  # the demo's default: keep all
    assert names(checkpoints_to_prune(checkpoints, 1, 1, BY)) == [
        "step000001.ckpt",
        "step000003.ckpt",
        "step000004.ckpt",
    ]
    assert names(checkpoints_to_prune(checkpoints, 0, 2, BY)) == [
        "step000001.ckpt",
        "step000003.ckpt",
        "step000005.ckpt",
    ]
    assert checkpoints_to_prune(checkpoints, 9, 0, BY) == []
    pruned = prune_checkpoints(checkpoints, 2, 1, BY)
    assert names(pruned) == ["step000001.ckpt", "step000003.ckpt"]
    left = {p.name for p in checkpoints.iterdir()}
    assert {"step000002.ckpt", "step000004.ckpt", "step000005.ckpt", "last.ckpt"} <= left
    assert all(f"{p.name}{REPORT_SUFFIX}" in left for p in pruned)  # the run's table keeps every step


def test_a_run_resumes_from_last_ckpt_not_a_newer_weights_only_checkpoint(tmp_path):
    checkpoints = make_run(tmp_path)
    (checkpoints / "step000005.ckpt").touch()  # newest by time, but holds weights only
    assert newest_complete_checkpoint(tmp_path) == checkpoints / "last.ckpt"
