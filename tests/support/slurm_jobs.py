"""``python -m slurm.submit`` jobs on the tests' real Slurm clusters (tests/support/slurm_cluster.py): starting a
cluster, the shrunk fine-tune every Slurm test runs, submitting as a user does, waiting with deadlines, and what a
finished run must hold. The one-node cluster (``slurm``) and its uninterrupted 2-task fine-tune
(``one_node_reference``, the run interrupted and multi-node ones must equal) are session fixtures, shared by the
Slurm test modules (registered in tests/conftest.py).

Where Slurm is not installed or cannot start, the tests skip, unless ``REQUIRE_SLURM=1`` (as ``.ci/run`` sets):
then they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tbparse import SummaryReader

from recipes.config import REPO
from tests.support.runs import TINY, checkpoint_weights
from tests.support.slurm_cluster import SlurmCluster, missing_binaries

STEPS, EPOCH = 4, 2  # two checkpoints (steps 2 and 4), each with its streaming evaluation
EVAL_UTTERANCES = 4  # per dev set: two per rank
TRAIN = [
    *TINY,
    f"trainer.max_steps={STEPS}",
    f"trainer.limit_train_batches={EPOCH}",
    f"callbacks.checkpoint.max_utterances={EVAL_UTTERANCES}",
    "callbacks.checkpoint.long_form_sets=null",  # short dev sets only (tests/test_long_form.py streams the long ones)
]
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
TRAINING_TIMEOUT = 480  # seconds, one training job on the shared 2-core machine


def unavailable(reason: str):
    if os.environ.get("REQUIRE_SLURM") == "1":
        pytest.fail(f"REQUIRE_SLURM=1, but {reason}")
    pytest.skip(reason)


def start_cluster(root: Path, **kwargs) -> SlurmCluster:
    """A started cluster (``SlurmCluster`` arguments), or the test skips (fails under ``REQUIRE_SLURM=1``)."""
    missing = missing_binaries(kwargs.get("nodes", 1))
    if missing:
        unavailable(f"Slurm is not installed (no {', '.join(missing)}): apt-get install -y slurm-wlm munge")
    cluster = SlurmCluster(root, **kwargs)
    try:
        return cluster.start()
    except (RuntimeError, OSError) as err:
        unavailable(f"Slurm cannot start here: {err}")


def run_submit(slurm: SlurmCluster, workdir: Path, kind: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m slurm.submit <kind> cluster.python=<this python> <args>`` from ``workdir``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "slurm.submit", kind, f"cluster.python={sys.executable}", *args],
        cwd=workdir,
        env={**slurm.env, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def submit(slurm: SlurmCluster, workdir: Path, kind: str, *args: str) -> dict[str, str]:
    """Submitted jobs: {job name: job id}."""
    done = run_submit(slurm, workdir, kind, *args)
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines())


def wait_for(slurm: SlurmCluster, job_id: str, log: Path, timeout: float, condition=None) -> dict[str, str]:
    """Wait until ``condition(job)`` (default: the job has ended); on the deadline cancel it and fail."""
    condition = condition or (lambda job: job["JobState"] in FINAL_STATES)
    deadline = time.monotonic() + timeout
    while not condition(job := slurm.job(job_id)):
        if time.monotonic() > deadline:
            slurm.run("scancel", job_id)
            tail = log.read_text()[-3000:] if log.is_file() else "(no log)"
            pytest.fail(f"job {job_id} still {job['JobState']} after {timeout} s; log {log}:\n{tail}")
        time.sleep(1)
    return job


def wait_for_file(slurm: SlurmCluster, job_id: str, path: Path, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        job = slurm.job(job_id)
        if job["JobState"] in FINAL_STATES or time.monotonic() > deadline:
            slurm.run("scancel", job_id)
            pytest.fail(f"no {path} (job {job_id} {job['JobState']}); log {log}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def interrupt(slurm: SlurmCluster, job_id: str, run_dir: Path, log: Path) -> None:
    """USR1 to the batch shell, as Slurm sends it before the time limit, while the first checkpoint is evaluated:
    the ranks stop one step later, mid-epoch, with steps still to come."""
    wait_for_file(slurm, job_id, run_dir / "checkpoints" / f"step{EPOCH:06d}.ckpt", log, TRAINING_TIMEOUT)
    slurm.run("scancel", "--signal=USR1", "--batch", job_id)


def job_log(run_dir: Path, job_id: str) -> Path:
    return run_dir / "slurm" / f"finetune-{job_id}.out"


def assert_one_evaluation_per_checkpoint(run_dir: Path) -> None:
    assert {p.name for p in (run_dir / "checkpoints").glob("step*.ckpt")} == {
        f"step{s:06d}.ckpt" for s in (EPOCH, STEPS)
    }
    for step in (EPOCH, STEPS):
        report = json.loads((run_dir / "checkpoints" / f"step{step:06d}.ckpt.stream_wer.json").read_text())
        assert report["step"] == step and set(report["sets"]) == {"target_dev", "general_dev"}
    scalars = SummaryReader(str(run_dir / "tensorboard")).scalars
    # Step 0 is the base model, scored once before training (callbacks.checkpoint.evaluate_base).
    assert sorted(scalars[scalars.tag == "stream_eval_seconds"].step) == [0, EPOCH, STEPS]


def final_weights(run_dir: Path):
    step, weights = checkpoint_weights(run_dir / "checkpoints" / f"step{STEPS:06d}.ckpt")
    assert step == STEPS
    return weights


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A one-node Slurm (``localhost``, two CPUs at least), stopped at the end of the session; a job process still
    alive then fails the session."""
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    left = cluster.stop()
    assert not left, f"job processes outlived the cluster (killed now): {left}"


@pytest.fixture(scope="session")
def one_node_reference(slurm, demo_workdir) -> tuple[Path, str]:
    """(run dir, job id) of the uninterrupted 2-task fine-tune on one node (``cluster=local``), submitted once per
    session: the runs interrupted or spread over nodes must end with its weights."""
    ids = submit(slurm, demo_workdir, "finetune", "cluster=local", "run_name=slurm_ref", *TRAIN)
    return demo_workdir / "exp" / "slurm_ref", ids["finetune"]


def reference_weights(slurm: SlurmCluster, reference: tuple[Path, str]):
    """The one-node run's final weights, once its job has completed."""
    run_dir, job_id = reference
    job = wait_for(slurm, job_id, job_log(run_dir, job_id), TRAINING_TIMEOUT)
    assert job["JobState"] == "COMPLETED", job_log(run_dir, job_id).read_text()[-3000:]
    return final_weights(run_dir)
