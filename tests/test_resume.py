"""Exact resume and preemption, with real training processes on CPU: a run killed with SIGKILL, or stopped by
SIGUSR1 / SIGTERM, and re-run with the same command ends with bit-identical weights to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from recipes.config import REPO
from recipes.errors import EXIT_PREEMPTED
from recipes.finetune.resume import newest_complete_checkpoint
from recipes.finetune.train import FINISHED
from tests.support.runs import TrainingRun, assert_bit_identical, checkpoint_weights

STEPS = 12
# Pseudo-epochs of 4 steps (validation + checkpoint), and last.ckpt every 3 steps: resumes land mid-epoch too.
RUN = [
    f"trainer.max_steps={STEPS}",
    "trainer.limit_train_batches=4",
    "callbacks.recovery.every_n_steps=3",
    "callbacks.checkpoint.eval_sets={}",
]
TIMEOUT = 600


@pytest.fixture(scope="module")
def uninterrupted(demo_workdir):
    """(global step, weights) at the end of the run nothing interrupted."""
    run = TrainingRun(demo_workdir, "resume_reference", RUN)
    try:
        assert run.wait(TIMEOUT) == 0, run.log_tail()
    finally:
        run.kill()
    return checkpoint_weights(run.run_dir / "checkpoints" / "last.ckpt")


def finish(run, start, workdir):
    """Re-run the same command; it must resume and finish (exit 0). Returns (step, weights) it ends with."""
    rerun = start(workdir, run.run_dir.name, RUN)
    assert rerun.wait(TIMEOUT) == 0, rerun.log_tail()
    assert "Resuming from" in rerun.log_tail(100_000)
    return checkpoint_weights(run.run_dir / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(demo_workdir, uninterrupted, training_runs):
    run = training_runs(demo_workdir, "resume_killed", RUN)
    run.wait_for(run.run_dir / "checkpoints" / "step000004.ckpt", TIMEOUT)
    delay = random.uniform(0, 2)  # a random step after the first checkpoint (0.3-1 s a step here)
    time.sleep(delay)
    run.kill()  # SIGKILL to the whole process group: no handler runs
    killed_at, _ = checkpoint_weights(newest_complete_checkpoint(run.run_dir))
    assert killed_at < STEPS, f"the run finished before it was killed (delay {delay:.1f} s): kill it sooner"
    assert not (run.run_dir / FINISHED).exists()  # what makes scripts/run_demo.sh re-run, not skip, fine-tuning
    step, weights = finish(run, training_runs, demo_workdir)
    assert json.loads((run.run_dir / FINISHED).read_text()) == {"step": STEPS}
    assert step == uninterrupted[0] == STEPS
    assert_bit_identical(weights, uninterrupted[1])


@pytest.mark.slow
def test_signals_save_exit_75_and_resume_bit_identical(demo_workdir, uninterrupted, training_runs):
    """SIGUSR1 (SLURM's warning), then SIGTERM on the resumed run: each saves at the next step and exits 75;
    the third run finishes with the uninterrupted run's weights, so no step was lost or repeated."""
    name = "resume_signals"
    stopped_at = []
    for signum, after in ((signal.SIGUSR1, "step000004.ckpt"), (signal.SIGTERM, "step000008.ckpt")):
        run = training_runs(demo_workdir, name, RUN)
        run.wait_for(run.run_dir / "checkpoints" / after, TIMEOUT)
        run.signal(signum)
        assert run.wait(TIMEOUT) == EXIT_PREEMPTED, run.log_tail()
        assert f"{signal.Signals(signum).name} received" in run.log_tail(100_000)
        stopped_at.append(checkpoint_weights(run.run_dir / "checkpoints" / "last.ckpt")[0])
    assert stopped_at[0] >= 4 and stopped_at[1] >= 8 and stopped_at[1] < STEPS, stopped_at
    step, weights = finish(run, training_runs, demo_workdir)
    assert step == STEPS
    assert_bit_identical(weights, uninterrupted[1])


def test_truncated_checkpoint_is_skipped_for_the_one_before(tmp_path, caplog):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    torch.save(
        {"state_dict": {}, "loops": {}, "optimizer_states": [], "global_step": 3}, checkpoints / "step000003.ckpt"
    )
    torch.save({"state_dict": {}, "loops": {}, "optimizer_states": [], "global_step": 6}, checkpoints / "last.ckpt")
    data = (checkpoints / "last.ckpt").read_bytes()
    (checkpoints / "last.ckpt").write_bytes(data[: len(data) // 2])  # newest, but cut short
    assert newest_complete_checkpoint(tmp_path) == checkpoints / "step000003.ckpt"
    assert "Skipping" in caplog.text and "last.ckpt" in caplog.text


BLOCKED = """
import threading
from recipes.finetune.callbacks.preemption import PreemptionCheckpoint
PreemptionCheckpoint(sigterm_grace_s={grace}).on_train_start(None, None)
print("ready", flush=True)
threading.Event().wait()  # like a rank blocked in a collective whose partner died: no next step ever comes
"""


@pytest.mark.parametrize("grace, second_sigterm", [(2.0, False), (60.0, True)])
def test_sigterm_ends_a_blocked_process_within_the_bound(grace, second_sigterm):
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED.format(grace=grace)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if second_sigterm:
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=grace + 30) == 128 + signal.SIGTERM
        elapsed = time.monotonic() - start
        assert elapsed < 5 if second_sigterm else grace <= elapsed < grace + 5, elapsed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
