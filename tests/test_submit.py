"""``python -m slurm.submit --dry-run``: the scripts each cluster config renders (no Slurm needed; the jobs
themselves run in tests/test_slurm.py)."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from recipes.config import REPO
from slurm.submit import main


def dry_run(capsys, monkeypatch, cwd, *argv: str) -> dict[str, str]:
    """{script path: text} of what ``python -m slurm.submit <argv> --dry-run`` prints."""
    monkeypatch.chdir(cwd)
    main([*argv, "--dry-run"])
    out = capsys.readouterr().out
    parts = re.split(r"^# sbatch --parsable (?:--dependency=afterok:<\w+ job id> )?(\S+)\n", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def sbatch_options(script: str) -> list[str]:
    return re.findall(r"^#SBATCH (\S+)", script, flags=re.M)


def assert_valid_bash(script: str) -> None:
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_multi_node_gpu_finetune_has_one_task_per_gpu_and_forwards_signals(capsys, monkeypatch, tmp_path):
    scripts = dry_run(
        capsys,
        monkeypatch,
        tmp_path,
        "finetune",
        "cluster.nodes=4",
        "cluster.partition=batch",
        "cluster.account=asr",
        "cluster.qos=high",
        "cluster.signal_seconds=300",
        "cluster.container.image=nvcr.io/nvidia/nemo:25.09",
        "cluster.container.mounts=[/lustre:/lustre]",
        "experiment=demo_finetune",
        "run_name=big",
    )
    ((path, script),) = scripts.items()
    assert path == str(tmp_path / "exp" / "big" / "slurm" / "finetune.sbatch")
    options = sbatch_options(script)
    for option in (
        "--nodes=4",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--partition=batch",
        "--account=asr",
        "--qos=high",
        "--signal=B:USR1@300",
        "--requeue",
        "--open-mode=append",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/exp/big/slurm/finetune-%j.out",
    ):
        assert option in options
    assert 'export TORCH_NCCL_ASYNC_ERROR_HANDLING="1"' in script and 'export OMP_NUM_THREADS="8"' in script
    assert "--container-image=nvcr.io/nvidia/nemo:25.09 --container-mounts=/lustre:/lustre" in script
    assert "python -m recipes.finetune trainer=slurm_gpu experiment=demo_finetune run_name=big" in script
    assert "trap 'forward USR1' USR1" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    # One task checks the config and fetches the model before the ranks start; then one rank per GPU, each on its
    # own cores, seeing all of its node's GPUs (it takes GPU SLURM_LOCALID: no --gpus-per-task or --gpu-bind).
    check, train = re.findall(r"^srun (.*) \\\n\s+(.*)$", script, flags=re.M)
    assert check[0].startswith("--nodes=1 --ntasks=1 ") and check[1].endswith(" validate_only=true")
    assert train[0].startswith("--wait=120 --kill-on-bad-exit=0 ") and "--cpu-bind=cores" in train[0]
    assert 'trainer.num_nodes="$SLURM_JOB_NUM_NODES" trainer.devices="$SLURM_NTASKS_PER_NODE" &' in script
    assert "--gpus-per-task" not in script and "--gpu-bind" not in script
    assert_valid_bash(script)


def test_the_annotated_script_in_the_docs_is_what_dry_run_prints(capsys, monkeypatch, tmp_path):
    """docs/slurm.md annotates a 4-node x 8-GPU script line by line: it must stay what the command beside it prints."""
    doc = (REPO / "docs" / "slurm.md").read_text()
    command, listing = re.search(
        r"```bash\n(python -m slurm\.submit finetune cluster\.nodes=4 .*?)\n```\n\n```text\n(.*?)```", doc, flags=re.S
    ).groups()
    monkeypatch.chdir(tmp_path)
    main(shlex.split(command.replace("\\\n", " "))[3:])  # the doc's run directory is /lustre/asr
    assert capsys.readouterr().out.replace(str(tmp_path), "/lustre/asr").rstrip() == listing.rstrip()


def test_chain_mode_submits_a_follow_up_instead_of_requeueing(capsys, monkeypatch, tmp_path):
    scripts = dry_run(
        capsys,
        monkeypatch,
        tmp_path,
        "pipeline",
        "cluster.requeue=chain",
        "run_name=r",
        "evaluate.max_utterances=7",
        "export.nemo.fp16_weights=true",
    )
    finetune, export, evaluate = scripts.values()
    assert "--no-requeue" in sbatch_options(finetune) and "scontrol requeue" not in finetune
    assert (
        f'sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID" "{tmp_path}/exp/r/slurm/finetune.sbatch"' in finetune
    )
    assert "recipes.export run_dir=" in export and "nemo.fp16_weights=true" in export
    assert "max_utterances=7" in evaluate and f"output={tmp_path}/exp/r/model.nemo.stream_wer.json" in evaluate
    for script in scripts.values():
        assert_valid_bash(script)


def test_data_prep_is_an_array_then_a_merge(capsys, monkeypatch, demo_workdir):
    scripts = dry_run(capsys, monkeypatch, demo_workdir, "data_prep", "cluster.data_prep.tasks=3", "corpus=demo_target")
    (prep_path, prep), (merge_path, merge) = scripts.items()
    assert prep_path == str(demo_workdir / "data" / "prepared" / "demo_target" / "slurm" / "prep.sbatch")
    assert "--array=0-2" in sbatch_options(prep) and "--cpus-per-task=32" in sbatch_options(prep)
    assert 'part.index="$SLURM_ARRAY_TASK_ID" part.count=3' in prep
    assert "part." not in merge and "corpus=demo_target" in merge
    assert "--exclusive" not in prep
    assert_valid_bash(prep)


def test_data_prep_tasks_can_take_a_node_each(capsys, monkeypatch, demo_workdir):
    scripts = dry_run(
        capsys, monkeypatch, demo_workdir, "data_prep", "cluster.data_prep.exclusive=true", "corpus=demo_target"
    )
    prep, merge = (sbatch_options(script) for script in scripts.values())
    assert {"--nodes=1", "--exclusive", "--array=0-3"} <= set(prep) and "--exclusive" not in merge


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train"], "job kind 'train': use one of finetune, pipeline, data_prep"),
        (["finetune", "cluster.requeue=sometimes"], "cluster.requeue=sometimes: not one of scontrol, chain"),
        (
            ["finetune", "cluster.tasks_per_node=4"],
            "cluster.tasks_per_node=4: one rank per GPU, so it must equal cluster.gpus_per_node=8",
        ),
        (["finetune", "trainer=nonexistent"], "trainer=nonexistent: no such option in conf/trainer/"),
        (["data_prep", "corpus=demo_target", "part.count=0"], "part.count=0: give an integer >= 1"),
    ],
)
def test_mistakes_are_one_line_and_exit_code_2(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--dry-run"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("slurm.submit: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
