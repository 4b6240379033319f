"""``python -m slurm.submit`` on a real two-node Slurm (tests/support/slurm_cluster.py): ``node1`` and ``node2``,
two ``slurmd`` on 127.0.0.11 and 127.0.0.12, each with its own hostname and two GPUs declared as GRES.

``cluster=local_two_nodes``: one rank per node, each granted one GPU (``--gpus-per-node=1``) and training on CPU,
DDP over gloo between the nodes. A fine-tune that finishes and ends with the one-node 2-task run's weights; the same
interrupted by USR1 and requeued; the same with the second node's rank killed, which must end the job (not hang
it) and leave nothing running, and resume when submitted again; a GPU request the nodes cannot satisfy, refused
before anything is queued; a data-prep array spread over both nodes. Every wait has a deadline (a job still
running then is cancelled); the cluster is stopped at the end of the module, and no job process may outlive it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from recipes.evaluate.sets import load_eval_set
from tests.support.runs import assert_bit_identical, checkpoint_weights
from tests.support.slurm_cluster import SlurmCluster
from tests.support.slurm_jobs import (
    EPOCH,
    EVAL_UTTERANCES,
    STEPS,
    TRAIN,
    TRAINING_TIMEOUT,
    assert_one_evaluation_per_checkpoint,
    final_weights,
    interrupt,
    job_log,
    reference_weights,
    run_submit,
    start_cluster,
    submit,
    wait_for,
    wait_for_file,
)

pytestmark = pytest.mark.slurm

CLUSTER = "cluster=local_two_nodes"
RANK_EXIT_WAIT = 20  # srun --wait of the dying-rank test: seconds the surviving rank gets once one has exited
END_BOUND = 30  # ... and the job must have ended this many seconds after that (KillWait=5, the batch shell's exit)
RANK_LINE = re.compile(r"rank (\d+) of (\d+): node (\d+), local rank (\d+), host (\S+), device (\S+)")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two nodes with 4 CPUs and 2 GPUs each (declared; the CPUs so that 4 ranks per node fit and only GPUs can be
    refused). Stopped at the end of the module; a job process still alive then fails the module."""
    cluster = start_cluster(tmp_path_factory.mktemp("slurm2"), nodes=2, cpus=4, gpus_per_node=2)
    yield cluster
    left = cluster.stop()
    assert not left, f"job processes outlived the cluster (killed now): {left}"


def submit_two_nodes(cluster: SlurmCluster, workdir: Path, run_name: str, *args: str) -> str:
    return submit(cluster, workdir, "finetune", CLUSTER, f"run_name={run_name}", *TRAIN, *args)["finetune"]


def ranks(log: Path) -> set[tuple[int, int, int, int, str]]:
    """(rank, world size, node id, local rank, host) of every rank that started, from the job's log."""
    return {(int(r), int(w), int(n), int(lr), host) for r, w, n, lr, host, _ in RANK_LINE.findall(log.read_text())}


def assert_no_job_processes(cluster: SlurmCluster, job_id: str, timeout: float = 15) -> None:
    """Nothing of the job is left on either node (slurmd may take KillWait to reap a step)."""
    deadline = time.monotonic() + timeout
    while left := cluster.job_processes(job_id):
        assert time.monotonic() < deadline, f"job {job_id} left processes: {left}"
        time.sleep(0.5)


def assert_evaluations_split_over_nodes(workdir: Path, run_dir: Path) -> None:
    """Each checkpoint's report has all the chosen utterances of every dev set: rank 0's share (node1), then rank
    1's (node2), gathered (recipes.evaluate.sets.EvalSet.shard: every second utterance)."""
    corpora = {"target_dev": "demo_target", "general_dev": "demo_general"}
    chosen = {
        name: load_eval_set(name, workdir / "data" / "prepared" / corpus / "dev" / "cuts.jsonl.gz", EVAL_UTTERANCES).ids
        for name, corpus in corpora.items()
    }
    for step in (EPOCH, STEPS):
        report = json.loads((run_dir / "checkpoints" / f"step{step:06d}.ckpt.stream_wer.json").read_text())
        assert set(report["sets"]) == set(chosen)
        for name, by_lookahead in report["sets"].items():
            for entry in by_lookahead.values():
                assert [u["id"] for u in entry["utterances"]] == chosen[name][0::2] + chosen[name][1::2]


@pytest.fixture(scope="module")
def two_node_run(nodes, demo_workdir) -> tuple[Path, str]:
    return demo_workdir / "exp" / "two_nodes", submit_two_nodes(nodes, demo_workdir, "two_nodes")


def test_two_node_finetune_runs_a_rank_per_node_and_ends_with_the_one_node_weights(
    nodes, demo_workdir, two_node_run, slurm, one_node_reference
):
    run_dir, job_id = two_node_run
    script = (run_dir / "slurm" / "finetune.sbatch").read_text()
    for option in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1"):
        assert f"#SBATCH {option}\n" in script
    log = job_log(run_dir, job_id)
    job = wait_for(nodes, job_id, log, TRAINING_TIMEOUT)
    assert job["JobState"] == "COMPLETED", log.read_text()[-3000:]
    assert [(r["State"], r["ExitCode"], r["NodeList"]) for r in nodes.records(job_id)] == [
        ("COMPLETED", "0:0", "node[1-2]")
    ]
    # The controller granted one GPU on each node; the ranks ran on CPU there, one per node, each on its own host.
    assert job["TresPerNode"] == "gres:gpu:1"
    assert ranks(log) == {(0, 2, 0, 0, "node1"), (1, 2, 1, 0, "node2")}
    assert "training exited with 0" in log.read_text()
    assert_one_evaluation_per_checkpoint(run_dir)
    assert_evaluations_split_over_nodes(demo_workdir, run_dir)
    assert_no_job_processes(nodes, job_id)
    # Two ranks on two nodes compute what two ranks on one node do: same batches per rank (the loaders shard by
    # global rank), same gloo sum of two gradients, same seed.
    assert_bit_identical(final_weights(run_dir), reference_weights(slurm, one_node_reference))


def test_usr1_requeues_the_two_node_job_and_both_nodes_resume_bit_identically(nodes, demo_workdir, two_node_run):
    run_dir = demo_workdir / "exp" / "two_nodes_requeue"
    job_id = submit_two_nodes(nodes, demo_workdir, "two_nodes_requeue")
    log = job_log(run_dir, job_id)
    interrupt(nodes, job_id, run_dir, log)
    wait_for(nodes, job_id, log, 120, lambda j: j["Restarts"] == "1" and j["JobState"] == "PENDING")
    saved_at, _ = checkpoint_weights(run_dir / "checkpoints" / "last.ckpt")  # the signal checkpoint
    assert EPOCH < saved_at < STEPS
    nodes.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # skip the requeue hold (~2 min)
    job = wait_for(nodes, job_id, log, TRAINING_TIMEOUT)
    assert (job["JobState"], job["ExitCode"], job["Restarts"]) == ("COMPLETED", "0:0", "1")
    assert [r["State"] for r in nodes.records(job_id)] == ["PENDING", "COMPLETED"]
    text = log.read_text()
    assert "training exited with 75" in text and f"requeueing job {job_id}" in text
    # Both runs had a rank on each node, and both ranks of the second run resumed from the signal checkpoint.
    assert [m[4] for m in RANK_LINE.findall(text)].count("node2") == 2
    assert len(re.findall(r"Resuming from \S*last\.ckpt", text)) == 2
    assert_bit_identical(final_weights(run_dir), final_weights(two_node_run[0]))
    assert_one_evaluation_per_checkpoint(run_dir)


def test_a_killed_rank_on_the_second_node_ends_the_job_and_a_resubmission_resumes(nodes, demo_workdir, two_node_run):
    run_dir = demo_workdir / "exp" / "two_nodes_kill"
    args = (f"cluster.rank_exit_wait={RANK_EXIT_WAIT}",)
    job_id = submit_two_nodes(nodes, demo_workdir, "two_nodes_kill", *args)
    log = job_log(run_dir, job_id)
    # Mid-run: the first checkpoint evaluated and last.ckpt written after it (the step checkpoint holds weights only:
    # callbacks.checkpoint.optimizer_state=last), the ranks training towards the second.
    report = run_dir / "checkpoints" / "last.ckpt.stream_wer.json"
    wait_for_file(nodes, job_id, report, log, TRAINING_TIMEOUT)
    (victim,) = [
        p
        for p in nodes.job_processes(job_id)
        if p.node == "node2" and "recipes.finetune" in p.command and "validate_only" not in p.command
    ]
    os.kill(victim.pid, signal.SIGKILL)
    killed = time.monotonic()
    job = wait_for(nodes, job_id, log, RANK_EXIT_WAIT + END_BOUND)
    ended_after = time.monotonic() - killed
    assert job["JobState"] == "FAILED", log.read_text()[-3000:]
    ((record),) = nodes.records(job_id)
    # Failed, not interrupted: the batch script passes on srun's status (137 for a task killed by SIGKILL), not 75.
    assert record["State"] == "FAILED" and record["ExitCode"] not in ("0:0", "75:0")
    assert_no_job_processes(nodes, job_id)
    assert not (run_dir / "checkpoints" / f"step{STEPS:06d}.ckpt").exists()

    # The same command again: it resumes from the newest complete checkpoint (the first epoch's) and finishes.
    again = submit_two_nodes(nodes, demo_workdir, "two_nodes_kill", *args)
    log = job_log(run_dir, again)
    job = wait_for(nodes, again, log, TRAINING_TIMEOUT)
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), log.read_text()[-3000:]
    resumed = set(re.findall(r"Resuming from (\S+\.ckpt) \(step (\d+)\)", log.read_text()))  # each rank's line
    assert {(Path(path).name, int(step)) for path, step in resumed} == {("last.ckpt", EPOCH)}
    assert_bit_identical(final_weights(run_dir), final_weights(two_node_run[0]))
    print(f"killed rank: job ended {ended_after:.1f} s after the kill (rank_exit_wait {RANK_EXIT_WAIT} s)")


def test_more_gpus_per_node_than_the_nodes_have_is_refused_before_anything_is_queued(nodes, demo_workdir):
    before = nodes.run("scontrol", "show", "jobs", "-o")
    done = run_submit(nodes, demo_workdir, "finetune", CLUSTER, "cluster.gpus_per_node=4", "run_name=too_many", *TRAIN)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("slurm.submit: error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "Requested node configuration is not available" in done.stderr and "nothing was queued" in done.stderr
    assert nodes.run("scontrol", "show", "jobs", "-o") == before
    # The same ranks with the two GPUs each node has are accepted: it was the GPUs, not the CPUs.
    script = demo_workdir / "exp" / "too_many" / "slurm" / "finetune.sbatch"
    nodes.run("sbatch", "--test-only", "--gpus-per-node=2", str(script))


def test_data_prep_array_tasks_spread_over_the_nodes(nodes, demo_workdir, tmp_path):
    ids = submit(nodes, demo_workdir, "data_prep", CLUSTER, f"out_root={tmp_path}", "corpus=demo_target")
    log_dir = tmp_path / "demo_target" / "slurm"
    job = wait_for(nodes, ids["merge"], log_dir / f"merge-{ids['merge']}.out", 300)
    assert job["JobState"] == "COMPLETED"
    tasks = re.findall(r"ArrayTaskId=(\d+) .*?BatchHost=(\S+)", nodes.run("scontrol", "show", "job", "-o", ids["prep"]))
    assert sorted(node for _, node in tasks) == ["node1", "node2"], tasks  # --exclusive: a node per task
    assert (tmp_path / "demo_target" / "train" / "cuts.jsonl.gz").is_file()
