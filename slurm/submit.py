"""Render and submit SLURM jobs for the recipes:

    python -m slurm.submit <finetune|pipeline|data_prep> [cluster=<name>] [cluster.<key>=<value> ...]
                           [--dry-run | dry_run=true] [the recipe's overrides ...]

``cluster=``, ``cluster.*`` and ``dry_run=`` set this helper's config (``conf/submit.yaml``, ``conf/cluster/``);
every other argument is passed to the recipe (``recipes.finetune`` or ``data_prep``), and for ``pipeline`` the
ones starting with ``export.`` or ``evaluate.`` to those jobs. The scripts are written to ``<run dir>/slurm/``
and submitted in order, each later one with ``--dependency=afterok`` on the one before; ``--dry-run`` prints
them and the sbatch commands instead. Prints one ``<name> <job id>`` line per job.
"""

from __future__ import annotations

import subprocess
import sys

from recipes.checks import check_submit
from recipes.config import CONF, compose_config
from recipes.errors import UsageError, exit_on_usage_error
from slurm.jobs import Plan, plan_jobs

OWN_KEYS = ("cluster", "dry_run")


def split_args(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(job kind, this helper's overrides, the recipe's overrides)."""
    if not argv or argv[0].startswith("-") or "=" in argv[0]:
        raise UsageError("give the job kind first: python -m slurm.submit <finetune|pipeline|data_prep> ...")
    ours, recipe = [], []
    for arg in argv[1:]:
        if arg == "--dry-run":
            ours.append("dry_run=true")
        elif arg.split("=", 1)[0].lstrip("+~").split(".", 1)[0] in OWN_KEYS:
            ours.append(arg)
        else:
            recipe.append(arg)
    return argv[0], ours, recipe


def sbatch_message(stderr: str) -> str:
    """sbatch's complaint in one line, without its ``sbatch: error:`` prefixes."""
    lines = [line.removeprefix("sbatch: ").removeprefix("error: ").strip() for line in stderr.splitlines()]
    return "; ".join(line for line in lines if line)


def check_resources(plan: Plan) -> None:
    """Ask the controller whether it could run every job (``sbatch --test-only``: nodes, CPUs, GPUs, partition,
    time) before queueing any, so a request the cluster cannot satisfy leaves nothing behind."""
    for job in plan.jobs:
        path = plan.script_path(job)
        done = subprocess.run(["sbatch", "--test-only", str(path)], capture_output=True, text=True)
        if done.returncode:
            raise UsageError(
                f"{path}: the cluster refuses this job ({sbatch_message(done.stderr) or done.returncode}): "
                f"nothing was queued; fit cluster.nodes, cluster.gpus_per_node, cluster.cpus_per_task, cluster.mem "
                f'and cluster.partition to the nodes (sinfo -N -o "%N %P %c %m %G")'
            )


def sbatch(plan: Plan) -> dict[str, str]:
    """Write the scripts, check them with the controller, and submit them in order; returns {job name: job id}."""
    plan.log_dir.mkdir(parents=True, exist_ok=True)  # sbatch needs the log directory to exist
    for job in plan.jobs:
        plan.script_path(job).write_text(job.script)
    check_resources(plan)
    ids: dict[str, str] = {}
    for job in plan.jobs:
        path = plan.script_path(job)
        depend = [f"--dependency=afterok:{ids[job.after]}"] if job.after else []
        done = subprocess.run(["sbatch", "--parsable", *depend, str(path)], capture_output=True, text=True)
        if done.returncode:
            raise UsageError(f"sbatch {path}: {sbatch_message(done.stderr) or done.returncode}")
        ids[job.name] = done.stdout.strip().split(";")[0]
    if plan.chained:
        plan.dependents_path.write_text(" ".join(ids[j.name] for j in plan.jobs if j.after == "finetune"))
    return ids


def show(plan: Plan) -> str:
    parts = []
    for job in plan.jobs:
        depend = f"--dependency=afterok:<{job.after} job id> " if job.after else ""
        parts.append(f"# sbatch --parsable {depend}{plan.script_path(job)}\n{job.script}")
    return "\n".join(parts)


@exit_on_usage_error("slurm.submit")
def main(argv: list[str] | None = None) -> dict[str, str]:
    kind, ours, recipe = split_args(sys.argv[1:] if argv is None else argv)
    cfg = compose_config(CONF, "submit", ours)
    check_submit(cfg)  # the cluster config's keys (recipes/checks/submit.py)
    plan = plan_jobs(kind, cfg.cluster, recipe)
    if cfg.dry_run:
        print(show(plan))
        return {}
    ids = sbatch(plan)
    for name, job_id in ids.items():
        print(f"{name} {job_id}")
    return ids


if __name__ == "__main__":
    main()
