"""The jobs ``python -m slurm.submit`` submits, rendered from a cluster config (``conf/cluster/``) and the
recipe's own overrides into sbatch scripts (``slurm/templates/``).

Kinds:

- ``finetune``: one training job of ``nodes`` x ``tasks_per_node`` srun tasks, one per GPU (``SLURM_LOCALID``
  picks the device on its node). One task first checks the config and fetches a pretrained model, then all
  ranks train. Interrupted (exit code 75, checkpoint saved) it is requeued with ``scontrol requeue``, or followed
  by a job that resumes (``chain``).
- ``pipeline``: ``finetune``, then the export to ``.nemo``, then the streaming WER of that ``.nemo`` on the
  run's dev sets, each after the one before has succeeded (``--dependency=afterok``).
- ``data_prep``: a job array whose task i prepares shard range i of every split (``part.index=i``), one node
  each (``data_prep.exclusive``: a whole node, so the tasks spread over the nodes), then a merge job that reuses
  every shard and writes the merged outputs (identical to one process's).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from omegaconf import DictConfig, OmegaConf

from recipes.config import CONF, compose_config
from recipes.errors import EXIT_PREEMPTED, UsageError

KINDS = ("finetune", "pipeline", "data_prep")

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class Job:
    name: str  # the script is <log_dir>/<name>.sbatch, its logs <log_dir>/<name>-<job id>.out
    script: str
    after: str | None = None  # the job (by name) that must have succeeded first: --dependency=afterok


@dataclass
class Plan:
    log_dir: Path  # inside the run directory (the corpus directory for data_prep)
    jobs: list[Job] = field(default_factory=list)
    chained: bool = False  # requeue=chain: the training script moves its dependents to its follow-up job

    def script_path(self, job: Job) -> Path:
        return self.log_dir / f"{job.name}.sbatch"

    @property
    def dependents_path(self) -> Path:
        return self.log_dir / "finetune.dependents"


def quoted(args: list[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


def with_defaults(defaults: dict[str, str], user: list[str]) -> list[str]:
    """``key=value`` overrides: ours for every key the user did not set, then the user's."""
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in user}
    return [f"{k}={v}" for k, v in defaults.items() if k not in given] + list(user)


class Renderer:
    """Turns one cluster config into the sbatch options, srun flags and script text of each job."""

    def __init__(self, cluster: DictConfig, log_dir: Path) -> None:
        self.c = cluster
        self.log_dir = log_dir

    def sbatch(self, name: str, time: str, array: bool = False) -> list[str]:
        options = [
            f"--output={self.log_dir}/{name}-{'%A_%a' if array else '%j'}.out",
            f"--chdir={Path.cwd()}",  # where the recipe's relative paths point, as at submission
            f"--time={time}",
        ]
        options += [f"--{key}={self.c[key]}" for key in ("partition", "account", "qos") if self.c[key]]
        return options

    def srun(self, *extra: str) -> str:
        # srun of Slurm 22.05 does not take --cpus-per-task over from the job: pass it on.
        flags = [*extra, '--cpus-per-task="$SLURM_CPUS_PER_TASK"']
        if self.c.cpu_bind:  # each task pinned to its own CPUs (where the cluster's TaskPlugin binds)
            flags.append(f"--cpu-bind={self.c.cpu_bind}")
        container = self.c.container
        if container.image:
            flags.append(f"--container-image={shlex.quote(container.image)}")
            if container.mounts:
                flags.append("--container-mounts=" + shlex.quote(",".join(container.mounts)))
            flags.append(f"--container-workdir={shlex.quote(container.workdir or str(Path.cwd()))}")
        return " ".join(flags)

    def render(self, template: str, job_name: str, about: str, sbatch: list[str], **context) -> str:
        env = {k: v for k, v in OmegaConf.to_container(self.c.env, resolve=True).items() if v is not None}
        return _templates.get_template(template).render(
            about=about, job_name=job_name, sbatch=sbatch, env=env, setup=list(self.c.setup), **context
        )

    def step(self, job_name: str, about: str, sbatch: list[str], command: str) -> str:
        return self.render("step.sbatch.j2", job_name, about, sbatch, srun=self.srun(), command=command)


def finetune_plan(
    cluster: DictConfig,
    recipe_args: list[str],
    then_evaluate: bool,
    export_args: list[str] = (),
    evaluate_args: list[str] = (),
) -> Plan:
    overrides = [*cluster.recipe_overrides, *recipe_args]
    cfg = compose_config(CONF, "finetune", overrides)
    run_dir = Path(cfg.paths.run_dir)
    plan = Plan(run_dir / "slurm", chained=cluster.requeue == "chain")
    r = Renderer(cluster, plan.log_dir)
    c = cluster
    sbatch = r.sbatch("finetune", c.time) + [
        f"--nodes={c.nodes}",
        f"--ntasks-per-node={c.tasks_per_node}",
        f"--cpus-per-task={c.cpus_per_task}",
    ]
    sbatch += [f"--gpus-per-node={c.gpus_per_node}"] if c.gpus_per_node else []
    sbatch += [f"--mem={c.mem}"] if c.mem else []
    sbatch += [
        f"--signal=B:USR1@{c.signal_seconds}",
        "--requeue" if c.requeue == "scontrol" else "--no-requeue",
        "--open-mode=append",
    ]  # a requeued job appends to its log
    finetune = Job("finetune", "")
    # Exit code 75 from one rank is not a failure: the others get rank_exit_wait seconds to save and exit too.
    srun = r.srun(f"--wait={c.rank_exit_wait}", "--kill-on-bad-exit=0")
    command = f"{c.python} -m recipes.finetune {quoted(overrides)}"
    finetune.script = r.render(
        "finetune.sbatch.j2",
        f"finetune-{cfg.run_name}",
        f"Fine-tuning {cfg.run_name}: {c.nodes} node(s) x {c.tasks_per_node} rank(s), requeue={c.requeue}.",
        sbatch,
        srun=srun,
        command=command,
        check_srun=r.srun("--nodes=1", "--ntasks=1"),
        check_command=f"{command} validate_only=true",
        run_dir=run_dir,
        signal_seconds=c.signal_seconds,
        interrupted=EXIT_PREEMPTED,
        requeue=c.requeue,
        script=plan.script_path(finetune),
        dependents=plan.dependents_path,
    )
    plan.jobs.append(finetune)
    if not then_evaluate:
        return plan

    export_cfg = compose_config(CONF, "export", [f"run_dir={run_dir}", *export_args])
    nemo = Path(export_cfg.nemo.output)
    e = c.evaluate
    resources = ["--ntasks=1", f"--cpus-per-task={e.cpus_per_task}"] + ([f"--gpus={e.gpus}"] if e.gpus else [])

    def one_task(kind: str, about: str, module: str, args: list[str], after: str) -> None:
        command = f"{c.python} -m {module} {quoted(args)}"
        script = r.step(f"{kind}-{cfg.run_name}", about, r.sbatch(kind, e.time) + resources, command)
        plan.jobs.append(Job(kind, script, after=after))

    one_task(
        "export", f"Export {run_dir} to {nemo}.", "recipes.export", [f"run_dir={run_dir}", *export_args], "finetune"
    )
    dev_sets = OmegaConf.to_container(cfg.data.dev_sets, resolve=True)
    defaults = {
        "model": str(nemo),
        "output": f"{nemo}.stream_wer.json",
        "data": "{" + ", ".join(f'{name}: "{path}"' for name, path in dev_sets.items()) + "}",
    }
    one_task(
        "evaluate",
        f"Streaming WER of {nemo}.",
        "recipes.evaluate",
        with_defaults(defaults, list(evaluate_args)),
        "export",
    )
    return plan


def data_prep_plan(cluster: DictConfig, recipe_args: list[str]) -> Plan:
    from data_prep.errors import DataPrepError
    from data_prep.settings import settings_from_cfg

    cfg = compose_config(CONF / "data_prep", "prepare", list(recipe_args))
    try:
        settings = settings_from_cfg(cfg)  # inputs readable, keys valid: before anything is queued
    except DataPrepError as err:
        raise UsageError(str(err)) from None
    plan = Plan((Path.cwd() / settings.corpus_dir / "slurm").resolve())
    r = Renderer(cluster, plan.log_dir)
    d, corpus = cluster.data_prep, settings.corpus.name
    base = f'{cluster.python} -m data_prep {quoted(recipe_args)} progress=false num_workers="$SLURM_CPUS_PER_TASK"'
    resources = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={d.cpus_per_task}"]
    spread = ["--exclusive"] if d.exclusive else []  # a node to itself: the array's tasks go to different nodes
    plan.jobs.append(
        Job(
            "prep",
            r.step(
                f"prep-{corpus}",
                f"Prepare {corpus}: array task i writes shard range i of {d.tasks} of every split.",
                r.sbatch("prep", d.time, array=True) + resources + spread + [f"--array=0-{d.tasks - 1}"],
                f'{base} part.index="$SLURM_ARRAY_TASK_ID" part.count={d.tasks}',
            ),
        )
    )
    plan.jobs.append(
        Job(
            "merge",
            r.step(
                f"merge-{corpus}",
                f"Merge {corpus}: reuses every shard, writes cuts.jsonl.gz, rejects.jsonl, bins, summaries.",
                r.sbatch("merge", d.time) + resources,
                base,
            ),
            after="prep",
        )
    )
    return plan


def plan_jobs(kind: str, cluster: DictConfig, recipe_args: list[str]) -> Plan:
    """The jobs of ``kind`` for ``cluster`` (checked by ``recipes.checks.check_submit``); ``recipe_args`` are the
    recipe's overrides (for ``pipeline``, those starting with ``export.`` / ``evaluate.`` go, without the prefix, to
    those two jobs)."""
    if kind not in KINDS:
        raise UsageError(f"job kind {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "data_prep":
        return data_prep_plan(cluster, recipe_args)
    staged = {"export": [], "evaluate": [], "": []}
    for arg in recipe_args:
        stage, _, rest = arg.partition(".")
        key = stage if kind == "pipeline" and stage in ("export", "evaluate") and rest else ""
        staged[key].append(rest if key else arg)
    return finetune_plan(cluster, staged[""], kind == "pipeline", staged["export"], staged["evaluate"])
