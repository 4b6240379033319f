"""``slurm.submit``'s schema: ``conf/submit.yaml`` and the cluster config (``conf/cluster/``), checked before any
script is rendered or job submitted."""

from __future__ import annotations

from omegaconf import DictConfig

from recipes.schema import Bool, Either, Int, Key, ListOf, MapOf, Number, OneOf, Rule, Schema, Str

SLURM_TIME = Str(
    pattern=r"\d+(-\d{1,2}(:\d{2}){0,2})?|\d+(:\d{2}){1,2}",
    hint="a Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS",
)
OPTIONAL = Str(null=True)


def one_rank_per_gpu(cfg: DictConfig) -> list[str]:
    """Each rank takes GPU ``SLURM_LOCALID`` of its node: fewer ranks leave GPUs idle, more share one."""
    gpus, tasks = cfg.cluster.gpus_per_node, cfg.cluster.tasks_per_node
    if gpus and tasks != gpus:
        return [f"cluster.tasks_per_node={tasks}: one rank per GPU, so it must equal cluster.gpus_per_node={gpus}"]
    return []


SUBMIT = Schema(
    "slurm.submit",
    [
        Key("dry_run", Bool()),
        Key("cluster.partition", OPTIONAL, "null: the cluster's default"),
        Key("cluster.account", OPTIONAL),
        Key("cluster.qos", OPTIONAL),
        Key("cluster.time", SLURM_TIME),
        Key("cluster.nodes", Int(lo=1)),
        Key("cluster.gpus_per_node", Int(lo=0), "0: CPU nodes"),
        Key("cluster.tasks_per_node", Int(lo=1)),
        Key("cluster.cpus_per_task", Int(lo=1)),
        Key("cluster.cpu_bind", OPTIONAL, "srun --cpu-bind, e.g. cores (null: the cluster's default)"),
        Key("cluster.mem", Either((Int(lo=1), Str(pattern=r"\d+[KMGT]?", hint="a size such as 64G")), null=True)),
        Key("cluster.signal_seconds", Int(lo=0), "seconds before the time limit"),
        Key("cluster.requeue", OneOf(("scontrol", "chain"))),
        Key("cluster.rank_exit_wait", Int(lo=0)),
        Key("cluster.python", Str()),
        Key("cluster.setup", ListOf(Str())),
        Key("cluster.container.image", OPTIONAL),
        Key("cluster.container.mounts", ListOf(Str())),
        Key("cluster.container.workdir", OPTIONAL),
        Key("cluster.env", MapOf(Str(nonempty=False), null=True), "{VARIABLE: value} exported by the batch script"),
        Key("cluster.env.*", Either((Str(nonempty=False), Number()), null=True)),
        Key("cluster.recipe_overrides", ListOf(Str())),
        Key("cluster.data_prep.tasks", Int(lo=1)),
        Key("cluster.data_prep.cpus_per_task", Int(lo=1)),
        Key("cluster.data_prep.exclusive", Bool()),
        Key("cluster.data_prep.time", SLURM_TIME),
        Key("cluster.evaluate.gpus", Int(lo=0)),
        Key("cluster.evaluate.cpus_per_task", Int(lo=1)),
        Key("cluster.evaluate.time", SLURM_TIME),
    ],
    (Rule("one_rank_per_gpu", one_rank_per_gpu, "cluster.tasks_per_node = cluster.gpus_per_node on GPU nodes"),),
)


def check_submit(cfg: DictConfig) -> None:
    SUBMIT.check(cfg)
