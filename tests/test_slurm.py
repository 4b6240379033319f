"""The SLURM jobs of ``python -m slurm.submit`` against a real one-node Slurm (tests/support/slurm_cluster.py).

Two srun tasks (DDP over gloo on CPU) fine-tune the demo model for a few steps: a run that finishes, a run
interrupted by USR1 and requeued, and a pipeline with requeue off whose training is interrupted and continued by a
follow-up job, its export and evaluation chained after it; then a data-prep job array. Every wait has a deadline
(a job still running then is cancelled); the cluster is stopped, and any job left cancelled, at the end of the
session. The cluster and the uninterrupted run are session fixtures (tests/support/slurm_jobs.py), which the
two-node tests (tests/test_slurm_multinode.py) compare against too.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from data_prep.prepare import prepare_corpus
from recipes.config import CONF, compose_config
from tests.support.runs import assert_bit_identical, checkpoint_weights
from tests.support.slurm_cluster import SlurmCluster
from tests.support.slurm_jobs import (
    EPOCH,
    STEPS,
    TRAIN,
    TRAINING_TIMEOUT,
    assert_one_evaluation_per_checkpoint,
    final_weights,
    interrupt,
    job_log,
    reference_weights,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slurm


def submit_local(slurm: SlurmCluster, workdir: Path, kind: str, *args: str) -> dict[str, str]:
    return submit(slurm, workdir, kind, "cluster=local", *args)


def assert_one_wandb_run(run_dir: Path, processes: int) -> None:
    """Every training process logged to the run's one wandb id (offline: one folder per process)."""
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == processes
    assert {p.name.rsplit("-", 1)[1] for p in runs} == {(run_dir / "wandb_run_id").read_text().strip()}


def test_two_task_finetune_completes_with_checkpoints_and_evaluations(slurm, one_node_reference):
    run_dir, job_id = one_node_reference
    log = job_log(run_dir, job_id)
    job = wait_for(slurm, job_id, log, TRAINING_TIMEOUT)
    assert job["JobState"] == "COMPLETED"
    assert [(r["State"], r["ExitCode"]) for r in slurm.records(job_id)] == [("COMPLETED", "0:0")]
    text = log.read_text()
    assert "MEMBER: 1/2" in text and "MEMBER: 2/2" in text  # two ranks, one per srun task
    assert "training exited with 0" in text
    assert_one_evaluation_per_checkpoint(run_dir)
    assert checkpoint_weights(run_dir / "checkpoints" / "last.ckpt")[0] == STEPS


def test_usr1_requeues_and_the_job_resumes_bit_identically(slurm, demo_workdir, one_node_reference):
    reference = reference_weights(slurm, one_node_reference)
    run_dir = demo_workdir / "exp" / "slurm_requeue"
    job_id = submit_local(slurm, demo_workdir, "finetune", "run_name=slurm_requeue", *TRAIN)["finetune"]
    log = job_log(run_dir, job_id)
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
    ids = submit_local(
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


def test_without_requeue_a_follow_up_job_resumes(slurm, one_node_reference, chained):
    reference = reference_weights(slurm, one_node_reference)
    run_dir, ids = chained
    first = ids["finetune"]
    log = job_log(run_dir, first)
    assert "--no-requeue" in (run_dir / "slurm" / "finetune.sbatch").read_text()
    interrupt(slurm, first, run_dir, log)
    job = wait_for(slurm, first, log, 120)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("FAILED", "75:0", "0")  # not finished
    follow_up = re.search(r"follow-up job (\d+) resumes", log.read_text()).group(1)
    assert slurm.job(ids["export"])["Dependency"].startswith(f"afterok:{follow_up}")  # moved to the follow-up
    follow_log = job_log(run_dir, follow_up)
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
    ids = submit_local(slurm, demo_workdir, "data_prep", f"out_root={tmp_path / 'array'}", *args)
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
    follow_up = re.search(r"follow-up job (\d+)", job_log(run_dir, ids["finetune"]).read_text())
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
