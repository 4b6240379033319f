"""The SLURM jobs of ``python -m slurm.submit`` against a real one-node Slurm (tests/slurm_cluster.py).

Two srun tasks (DDP over gloo on CPU) fine-tune the demo model for a few steps: a run that finishes, a run
interrupted by USR1 and requeued, and a pipeline with requeue off whose training is interrupted and continued by a
follow-up job, its export and evaluation chained after it; then a data-prep job array. Every wait has a deadline (a job still running then is
cancelled); the cluster is stopped, and any job left cancelled, at the end of the session.

Where Slurm is not installed or cannot start, these tests skip, unless ``REQUIRE_SLURM=1`` (as ``.ci/run`` sets):
then they fail.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tbparse import SummaryReader

from data_prep.prepare import prepare_corpus
from recipes.config import CONF, REPO, compose_config
from tests.support.runs import TINY, assert_bit_identical, checkpoint_weights
from tests.support.slurm_cluster import SlurmCluster, missing_binaries

pytestmark = pytest.mark.slurm

STEPS, EPOCH = 6, 3  # two checkpoints (steps 3 and 6), each with its streaming evaluation
TRAIN = [
    *TINY,
    f"trainer.max_steps={STEPS}",
    f"trainer.limit_train_batches={EPOCH}",
    "callbacks.checkpoint.max_utterances=4",
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


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        unavailable(f"Slurm is not installed (no {', '.join(missing)}): apt-get install -y slurm-wlm munge")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as err:
        unavailable(f"Slurm cannot start here: {err}")
    yield cluster
    cluster.stop()


def submit(slurm: SlurmCluster, workdir: Path, kind: str, *args: str) -> dict[str, str]:
    """``python -m slurm.submit`` as a user runs it; returns {job name: job id}."""
    env = {**slurm.env, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "slurm.submit", kind, "cluster=local", f"cluster.python={sys.executable}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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


def assert_one_wandb_run(run_dir: Path, processes: int) -> None:
    """Every training process logged to the run's one wandb id (offline: one folder per process)."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == processes
    assert {p.name.rsplit("-", 1)[1] for p in runs} == {(run_dir / "wandb_run_id").read_text().strip()}


def final_weights(run_dir: Path):
    step, weights = checkpoint_weights(run_dir / "checkpoints" / f"step{STEPS:06d}.ckpt")
    assert step == STEPS
    return weights


@pytest.fixture(scope="module")
def reference(slurm, demo_workdir):
    """The uninterrupted 2-task fine-tune the interrupted ones must match."""
    return demo_workdir / "exp" / "slurm_ref", submit(slurm, demo_workdir, "finetune", "run_name=slurm_ref", *TRAIN)


def test_two_task_finetune_completes_with_checkpoints_and_evaluations(slurm, reference):
    run_dir, ids = reference
    log = run_dir / "slurm" / f"finetune-{ids['finetune']}.out"
    job = wait_for(slurm, ids["finetune"], log, TRAINING_TIMEOUT)
    assert job["JobState"] == "COMPLETED"
    assert [(r["State"], r["ExitCode"]) for r in slurm.records(ids["finetune"])] == [("COMPLETED", "0:0")]
    text = log.read_text()
    assert "MEMBER: 1/2" in text and "MEMBER: 2/2" in text  # two ranks, one per srun task
    assert "training exited with 0" in text
    assert_one_evaluation_per_checkpoint(run_dir)
    assert checkpoint_weights(run_dir / "checkpoints" / "last.ckpt")[0] == STEPS


def test_usr1_requeues_and_the_job_resumes_bit_identically(slurm, demo_workdir, reference):
    reference = final_weights(reference[0])
    run_dir = demo_workdir / "exp" / "slurm_requeue"
    job_id = submit(slurm, demo_workdir, "finetune", "run_name=slurm_requeue", *TRAIN)["finetune"]
    log = run_dir / "slurm" / f"finetune-{job_id}.out"
    interrupt(slurm, job_id, run_dir, log)
    job = wait_for(slurm, job_id, log, 120, lambda j: j["Restarts"] == "1" and j["JobState"] == "PENDING")
    saved_at, _ = checkpoint_weights(run_dir / "checkpoints" / "last.ckpt")  # the signal checkpoint
    assert EPOCH < saved_at < STEPS
    # Slurm holds a requeued job for about two minutes before it may start again; release it now.
    slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
    job = wait_for(slurm, job_id, log, TRAINING_TIMEOUT)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "1")
    records = slurm.records(job_id)  # one per run: the requeued one, then the one that finished
    assert [r["State"] for r in records] == ["PENDING", "COMPLETED"]
    text = log.read_text()
    assert "training exited with 75" in text and f"requeueing job {job_id}" in text
    assert f"job {job_id} run 1: training" in text and "training exited with 0" in text
    assert re.search(r"Resuming from \S*last\.ckpt", text)
    assert_bit_identical(final_weights(run_dir), reference)
    assert_one_evaluation_per_checkpoint(run_dir)
    assert_one_wandb_run(run_dir, 2)


@pytest.fixture(scope="module")
def chained(slurm, demo_workdir):
    """Requeue off: fine-tune (2 tasks) -> export -> evaluate, chained with afterok at submission."""
    ids = submit(
        slurm,
        demo_workdir,
        "pipeline",
        "run_name=slurm_chain",
        "cluster.requeue=chain",
        *TRAIN,
        "evaluate.max_utterances=4",
    )
    assert list(ids) == ["finetune", "export", "evaluate"]
    return demo_workdir / "exp" / "slurm_chain", ids


def test_without_requeue_a_follow_up_job_resumes(slurm, reference, chained):
    reference = final_weights(reference[0])
    run_dir, ids = chained
    first = ids["finetune"]
    log = run_dir / "slurm" / f"finetune-{first}.out"
    assert "--no-requeue" in (run_dir / "slurm" / "finetune.sbatch").read_text()
    interrupt(slurm, first, run_dir, log)
    job = wait_for(slurm, first, log, 120)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("FAILED", "75:0", "0")  # not finished
    follow_up = re.search(r"follow-up job (\d+) resumes", log.read_text()).group(1)
    assert slurm.job(ids["export"])["Dependency"].startswith(f"afterok:{follow_up}")  # moved to the follow-up
    follow_log = run_dir / "slurm" / f"finetune-{follow_up}.out"
    job = wait_for(slurm, follow_up, follow_log, TRAINING_TIMEOUT)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0")
    assert re.search(r"Resuming from \S*last\.ckpt", follow_log.read_text())
    assert_bit_identical(final_weights(run_dir), reference)
    assert_one_evaluation_per_checkpoint(run_dir)
    assert_one_wandb_run(run_dir, 2)


def test_data_prep_array_of_two_tasks_equals_one_process(slurm, demo_workdir, tmp_path):
    bad = tmp_path / "bad.jsonl"  # two rows that must be rejected, in a shard of their own
    bad.write_text('{"audio_filepath": "missing.wav", "duration": 1.0, "text": "gone"}\nnot json\n')
    args = [
        "corpus=demo_target",
        "shar.shard_size=8",
        f"corpus.splits.train=[data/demo_corpus/target/train.jsonl,{bad}]",
    ]
    ids = submit(slurm, demo_workdir, "data_prep", f"out_root={tmp_path / 'array'}", *args)
    log_dir = tmp_path / "array" / "demo_target" / "slurm"
    job = wait_for(slurm, ids["merge"], log_dir / f"merge-{ids['merge']}.out", 300)
    assert job["JobState"] == "COMPLETED"
    task_logs = sorted(log_dir.glob(f"prep-{ids['prep']}_*.out"))
    assert [p.name for p in task_logs] == [f"prep-{ids['prep']}_0.out", f"prep-{ids['prep']}_1.out"]
    assert "part 1 of 2 done" in task_logs[1].read_text()

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        one = prepare_corpus(
            compose_config(
                CONF / "data_prep",
                "prepare",
                [*args, f"out_root={tmp_path / 'one'}", "progress=false", "num_workers=1"],
            )
        )
    merged = json.loads((tmp_path / "array" / "demo_target" / "summary.json").read_text())
    for split in ("train", "dev"):
        assert merged["splits"][split]["shards"]["written"] == 0  # all written by the array tasks
        assert merged["splits"][split]["rows"] == one["splits"][split]["rows"]
        for name in ("cuts.jsonl.gz", "rejects.jsonl"):
            a, b = (tmp_path / side / "demo_target" / split / name for side in ("array", "one"))
            read = gzip.decompress if name.endswith(".gz") else bytes
            assert read(a.read_bytes()) == read(b.read_bytes()), f"{split}/{name}"
    assert one["splits"]["train"]["rows"]["rejected"] == 2


def test_export_and_evaluation_chained_after_training(slurm, chained):
    run_dir, ids = chained
    job = wait_for(slurm, ids["evaluate"], run_dir / "slurm" / f"evaluate-{ids['evaluate']}.out", 300)
    assert job["JobState"] == "COMPLETED"
    follow_up = re.search(r"follow-up job (\d+)", (run_dir / "slurm" / f"finetune-{ids['finetune']}.out").read_text())
    order = [follow_up.group(1), ids["export"], ids["evaluate"]]  # afterok: each after the one before
    (trained,), (exported,), (evaluated,) = (slurm.records(job_id) for job_id in order)
    for before, after in ((trained, exported), (exported, evaluated)):
        assert (after["State"], after["ExitCode"]) == ("COMPLETED", "0:0") and after["Start"] >= before["End"]
    assert (run_dir / "model.nemo").stat().st_size > 0
    report = json.loads((run_dir / "model.nemo.stream_wer.json").read_text())
    assert report["model"] == str(run_dir / "model.nemo")
    assert set(report["sets"]) == {"target_dev", "general_dev"}
    for by_lookahead in report["sets"].values():
        assert set(by_lookahead) == {"80ms", "160ms", "560ms", "1120ms"}
        assert all(len(entry["utterances"]) == 4 for entry in by_lookahead.values())
