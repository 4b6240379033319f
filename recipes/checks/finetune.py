"""``recipes.finetune``'s schema: every key of ``conf/finetune.yaml`` and its groups; the named cross-key rules are
beside it in ``recipes/checks/finetune_rules.py``.

Cheapest first, so a run stops within seconds and before any model is built: the keys' rows (types, ranges,
choices, files), then the rules (lookahead weights, devices, steps), then the init checkpoint's own config read from
the ``.nemo`` archive, then the training cuts against the duration filters. NeMo is not imported: its import alone
takes ~10 s (its registries' names are cached, see :class:`recipes.schema.Registry`)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml
from omegaconf import DictConfig

from recipes.checks.finetune_rules import (
    bucketing_off_without_bins,
    device_problems,
    freeze_within_encoder,
    lookahead_weights,
    lr_monitor_needs_logger,
    min_lr_below_lr,
    nodes_launched,
    streamed_lookaheads_trained,
    validation_within_steps,
)
from recipes.checks.models import model_problems
from recipes.checks.training_data import training_cut_problems
from recipes.errors import UsageError, first_line
from recipes.model_files import check_lightning_checkpoint
from recipes.schema import (
    Bool,
    Checked,
    ClassPath,
    Either,
    Free,
    Int,
    Key,
    ListOf,
    Lookaheads,
    MapOf,
    Number,
    OneOf,
    PathKind,
    Range,
    Registry,
    Rule,
    Schema,
    Str,
    Target,
    show,
)

MAX_LR = 1.0
PREPARE_DATA = "make it with python -m data_prep corpus=<name> and python -m data_prep.blend blend=<name>"
NEMO = "nemo_toolkit"
LIGHTNING = "lightning"


def lightning_checkpoint(value: str, key: str) -> None:
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{key}={value}: no such file: give a checkpoint of the run (or {key}=null)")
    check_lightning_checkpoint(path, key)


def input_cfg(value, key: str) -> None:
    """NeMo's ``input_cfg``: a YAML list of datasets (or the list itself); every path in it must hold data."""
    entries = value
    if isinstance(value, str):
        problem = PathKind("nonempty").check(value)
        if problem:
            raise UsageError(f"{key}={value}: {problem}: {PREPARE_DATA}")
        try:
            entries = yaml.safe_load(Path(value).read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise UsageError(f"{key}={value}: not valid YAML ({first_line(err)}): {PREPARE_DATA}") from None
    if not isinstance(entries, list) or not entries:
        raise UsageError(
            f"{key}={show(value)}: must be a non-empty YAML list of datasets (as data_prep.blend writes it)"
        )
    problems = []
    for i, entry in enumerate(entries):
        for field in ("shar_path", "cuts_path", "manifest_filepath"):
            if isinstance(entry, dict) and isinstance(entry.get(field), str):
                problem = PathKind("nonempty").check(entry[field])
                problems += [f"{key} [{i}].{field}={entry[field]}: {problem}: {PREPARE_DATA}"] if problem else []
    if problems:
        raise UsageError(*problems)


def path(of: str, null: bool = False) -> PathKind:
    return PathKind(of, PREPARE_DATA if of in ("cuts", "nonempty") else "", null)


SEED = Either((Int(lo=0), OneOf(("randomized", "trng"))))
STEPS_OR_SHARE = Either((Int(lo=1), Number(gt=0, hi=1)))

TOP = [
    Key("run_name", Str(pattern=r"[^/]+", hint="a name without /"), "the run directory is paths.exp_dir/<run_name>"),
    Key("seed", Int(lo=0, hi=2**32 - 1), "Lightning seeds every random generator with it"),
    Key("resume", Bool()),
    Key("ckpt_path", Checked(lightning_checkpoint, "a Lightning .ckpt of the run", null=True)),
    Key("validate_only", Bool()),
    Key("loader_timeout_s", Number(gt=0), "seconds the training loader may take for one batch before the run stops"),
    Key("paths.root_dir", PathKind("dir")),
    Key("paths.data_dir", PathKind("any")),
    Key("paths.exp_dir", PathKind("writable_dir")),
    Key("paths.run_dir", PathKind("writable_dir")),
]

MODEL = [
    Key("model.init_from", Str(null=True, hint="a .nemo, a run's .ckpt or a pretrained name")),
    Key("model.init_revision", Str(null=True, hint="a branch, tag or commit of the pretrained model's repository")),
    Key("model.att_context_size", Lookaheads()),
    Key("model.att_context_probs", ListOf(Number(lo=0), min_len=1, null=True), "one weight per lookahead"),
    Key("model.allow_new_lookaheads", Bool()),
    Key(
        "model.rnnt_loss",
        OneOf(Registry(NEMO, "nemo.collections.asr.losses.rnnt:RNNT_LOSS_RESOLVER", ("auto", "vectorized"))),
    ),
    Key("model.loss.fastemit_lambda", Number(lo=0, null=True)),
    Key("model.loss.clamp", Number(null=True)),
    Key("model.spec_augment.freq_masks", Int(lo=0, null=True)),
    Key("model.spec_augment.time_masks", Int(lo=0, null=True)),
    Key("model.spec_augment.freq_width", Int(lo=0, null=True)),
    Key("model.spec_augment.time_width", Either((Int(lo=0), Number(lo=0, hi=1)), null=True), "frames, or a share"),
    Key(
        "model.decoding.strategy",
        OneOf(
            Registry(NEMO, "nemo.collections.asr.parts.submodules.rnnt_decoding:TransducerDecodingStrategyType"), True
        ),
    ),
    Key("model.decoding.greedy.max_symbols", Int(lo=1, null=True)),
    Key("model.optim.name", OneOf(Registry(NEMO, "nemo.core.optim.optimizers:AVAILABLE_OPTIMIZERS"))),
    Key("model.optim.lr", Number(gt=0, hi=MAX_LR), "fine-tuning the 0.6B model typically uses 1e-5 to 1e-4"),
    Key("model.optim.betas", ListOf(Number(lo=0, hi=0.9999999), length=2)),
    Key("model.optim.weight_decay", Number(lo=0)),
    Key("model.optim.sched.name", OneOf(Registry(NEMO, "nemo.core.optim.lr_scheduler:AVAILABLE_SCHEDULERS"), True)),
    Key("model.optim.sched.warmup_steps", Int(lo=0, null=True)),
    Key("model.optim.sched.min_lr", Number(lo=0)),
    Key("model.model_class", ClassPath()),
    Key("model.architecture", Free("NeMo's model config: built by NeMo, from scratch only (model.init_from=null)")),
]

DATA = [
    Key("data.prepared_dir", PathKind("any")),
    Key("data.blend_dir", PathKind("any")),
    Key("data.blend_weights", MapOf(Number(lo=0), null=True), "{corpus: weight} of the blend's corpora"),
    Key("data.blend_weights.*", Number(lo=0)),
    Key("data.train_ds.use_lhotse", OneOf((True,)), "the recipe trains with NeMo's Lhotse loader"),
    Key("data.train_ds.input_cfg", Checked(input_cfg, "a blend's input_cfg.yaml (or its list of datasets)", null=True)),
    Key("data.train_ds.cuts_path", path("cuts", null=True)),
    Key("data.train_ds.shar_path", path("nonempty", null=True)),
    Key("data.train_ds.manifest_filepath", path("nonempty", null=True)),
    Key("data.train_ds.use_bucketing", Bool()),
    Key("data.train_ds.bucket_duration_bins", ListOf(Number(gt=0), min_len=1, null=True)),
    Key("data.train_ds.num_buckets", Int(lo=1)),
    Key("data.train_ds.concurrent_bucketing", Bool()),
    Key("data.train_ds.bucket_buffer_size", Int(lo=1)),
    Key("data.train_ds.shuffle_buffer_size", Int(lo=1)),
    Key("data.train_ds.batch_duration", Number(gt=0), "seconds of audio per batch"),
    Key("data.train_ds.min_duration", Number(null=True), "shortest utterance trained on, in seconds"),
    Key("data.train_ds.max_duration", Number(gt=0), "longest utterance trained on, in seconds"),
    Key("data.train_ds.shuffle", Bool()),
    Key("data.train_ds.seed", SEED),
    Key("data.train_ds.shard_seed", SEED),
    Key("data.train_ds.num_workers", Int(lo=0), "dataloader worker processes (0: the main process loads)"),
    Key("data.continuous.share", Number(lo=0, hi=1), "share of batches joined into continuous speech"),
    Key("data.continuous.max_duration", Number(gt=0)),
    Key("data.continuous.gap_s", Range(Number(lo=0))),
    Key("data.validation_ds.use_lhotse", OneOf((True,))),
    Key("data.validation_ds.cuts_path", path("cuts")),
    Key("data.validation_ds.batch_size", Int(lo=1)),
    Key("data.validation_ds.shuffle", Bool()),
    Key("data.validation_ds.num_workers", Int(lo=0)),
    Key("data.dev_sets", MapOf(path("cuts"), null=True), "the sets streamed at every checkpoint"),
    Key("data.dev_sets.*", path("cuts")),
    Key("data.long_form_sets", MapOf(path("cuts"), null=True), "continuous streams (python -m data_prep.long_form)"),
    Key("data.long_form_sets.*", path("cuts")),
]

TRAINER = [
    Key("trainer._target_", ClassPath()),
    Key(
        "trainer.accelerator",
        OneOf(Registry(LIGHTNING, "lightning.pytorch.accelerators:AcceleratorRegistry", ("auto", "gpu"))),
    ),
    Key("trainer.devices", Either((Int(lo=1), OneOf(("auto", -1)), ListOf(Int(lo=0), min_len=1)))),
    Key("trainer.num_nodes", Int(lo=1)),
    Key(
        "trainer.strategy",
        Either((OneOf(Registry(LIGHTNING, "lightning.pytorch.strategies:StrategyRegistry", ("auto",))), Target())),
    ),
    Key("trainer.strategy._target_", ClassPath()),
    Key("trainer.strategy.*", Free("the strategy's own arguments, checked by Lightning when the trainer is built")),
    Key("trainer.precision", OneOf(Registry(LIGHTNING, "lightning.fabric.connector:_PRECISION_INPUT"))),
    Key("trainer.max_steps", Int(lo=1), "Lhotse loaders have no length, so the step count is what ends training"),
    Key("trainer.limit_train_batches", STEPS_OR_SHARE, "steps per pseudo-epoch, each ends with a checkpoint"),
    Key("trainer.val_check_interval", STEPS_OR_SHARE, "steps between validations, or a share of the pseudo-epoch"),
    Key("trainer.check_val_every_n_epoch", Int(lo=1, null=True)),
    Key("trainer.use_distributed_sampler", Bool()),
    Key("trainer.accumulate_grad_batches", Int(lo=1)),
    Key("trainer.gradient_clip_val", Number(lo=0, null=True), "null: no clipping"),
    Key("trainer.log_every_n_steps", Int(lo=1)),
    Key("trainer.num_sanity_val_steps", Int(lo=-1)),
    Key("trainer.enable_progress_bar", Bool()),
    Key("trainer.default_root_dir", PathKind("writable_dir")),
    Key("trainer._convert_", OneOf(Registry("hydra-core", "hydra.types:ConvertMode"))),
    Key("trainer.plugins", ListOf(Target(), null=True), "Lightning plugins, each a {_target_: ...} mapping"),
    Key("trainer.plugins.*._target_", ClassPath()),
    Key("trainer.plugins.*.*", Free("the plugin's own arguments, checked by Lightning when the trainer is built")),
    Key("trainer.sync_batchnorm", Bool()),
]

CALLBACKS = [
    Key("callbacks.*._target_", ClassPath()),
    Key("callbacks.checkpoint.dirpath", PathKind("writable_dir")),
    Key("callbacks.checkpoint.filename", Str()),
    Key("callbacks.checkpoint.auto_insert_metric_name", Bool()),
    Key("callbacks.checkpoint.save_top_k", Int(lo=-1), "-1 keeps all"),
    Key("callbacks.checkpoint.keep_last", Int(lo=-1), "step checkpoints kept, newest first; -1: all"),
    Key("callbacks.checkpoint.keep_best", Int(lo=0), "step checkpoints kept by streaming WER"),
    Key("callbacks.checkpoint.rank_by.set", Str(null=True), "null: the first dev set"),
    Key("callbacks.checkpoint.rank_by.lookahead_ms", Int(lo=80, null=True), "null: the default lookahead"),
    Key("callbacks.checkpoint.rank_by.metric", OneOf(("wer", "wer_normalized"))),
    Key("callbacks.checkpoint.optimizer_state", OneOf(("last", "all")), "which checkpoints keep the optimizer state"),
    Key("callbacks.checkpoint.save_last", Bool()),
    Key("callbacks.checkpoint.enable_version_counter", Bool()),
    Key("callbacks.checkpoint.every_n_epochs", Int(lo=0)),
    Key("callbacks.checkpoint.eval_sets", MapOf(path("cuts"), null=True)),
    Key("callbacks.checkpoint.eval_sets.*", path("cuts")),
    Key("callbacks.checkpoint.long_form_sets", MapOf(path("cuts"), null=True)),
    Key("callbacks.checkpoint.long_form_sets.*", path("cuts")),
    Key("callbacks.checkpoint.lookaheads", Lookaheads()),
    Key("callbacks.checkpoint.max_utterances", Int(lo=1, null=True), "utterances streamed per set (null: all)"),
    Key("callbacks.checkpoint.batch_size", Int(lo=1)),
    Key("callbacks.checkpoint.evaluate_base", Bool()),
    Key("callbacks.lr_monitor.logging_interval", OneOf(("step", "epoch"), null=True)),
    Key("callbacks.lookahead_val_wer.lookaheads", Lookaheads()),
    Key("callbacks.recovery.every_n_steps", Int(lo=1, null=True)),
    Key("callbacks.recovery.every_minutes", Number(gt=0, null=True)),
    Key("callbacks.preemption.signals", ListOf(OneOf(tuple(s.name for s in signal.Signals)))),
    Key("callbacks.preemption.sigterm_grace_s", Number(gt=0)),
    Key("callbacks.preflight.enabled", Bool()),
    Key("callbacks.preflight.batch_duration", Number(gt=0)),
    Key("callbacks.preflight.max_duration", Number(gt=0)),
    Key("callbacks.preflight.tokens_per_second", Number(gt=0)),
    Key("callbacks.preflight.max_memory_gb", Number(gt=0, null=True)),
]

ADAPT = [
    Key("adapt._target_", ClassPath()),
    Key("adapt.freeze.encoder", Bool()),
    Key("adapt.freeze.encoder_layers", Int(lo=0)),
    Key("adapt.freeze.decoder", Bool()),
    Key("adapt.lr.encoder", Number(gt=0, hi=MAX_LR, null=True), "null: model.optim.lr"),
    Key("adapt.lr.decoder", Number(gt=0, hi=MAX_LR, null=True), "null: model.optim.lr"),
    Key("adapt.lr.joint", Number(gt=0, hi=MAX_LR, null=True), "null: model.optim.lr"),
    Key("adapt.layer_decay", Number(gt=0, hi=1), "1 = no decay"),
    Key("adapt.l2sp", Number(lo=0), "0 = off"),
]

LOGGER = [
    Key("logger", MapOf(Target(), null=True), "logger=none: no loggers"),
    Key("logger.*._target_", ClassPath()),
    Key("logger.wandb.project", Str()),
    Key("logger.wandb.name", Str()),
    Key("logger.wandb.save_dir", PathKind("writable_dir")),
    Key("logger.wandb.offline", Bool()),
    Key("logger.wandb.id", Str(null=True), "null: one id per run directory"),
    Key("logger.wandb.resume", OneOf(("allow", "must", "never", "auto"), null=True)),
    Key("logger.tensorboard.save_dir", PathKind("writable_dir")),
    Key("logger.tensorboard.name", Str()),
    Key("logger.tensorboard.version", Either((Int(lo=0), Str(nonempty=False)), null=True)),
]


FINETUNE = Schema(
    "recipes.finetune",
    TOP + MODEL + DATA + TRAINER + CALLBACKS + ADAPT + LOGGER,
    (
        Rule("lookahead_weights", lookahead_weights, "model.att_context_probs: one per lookahead, summing to 1"),
        Rule("min_lr_below_lr", min_lr_below_lr, "model.optim.sched.min_lr <= model.optim.lr"),
        Rule("devices_here", device_problems, "accelerator, precision and devices against this machine's GPUs"),
        Rule("nodes_launched", nodes_launched, "trainer.num_nodes > 1 only under a launcher (SLURM, torchrun)"),
        Rule("validation_within_steps", validation_within_steps, "integer val_check_interval <= steps per epoch"),
        Rule("bucketing_off_without_bins", bucketing_off_without_bins, "use_bucketing=false with no bins set"),
        Rule("lr_monitor_needs_logger", lr_monitor_needs_logger, "callbacks.lr_monitor only with a logger"),
        Rule("streamed_lookaheads_trained", streamed_lookaheads_trained, "callbacks stream trained lookaheads"),
        Rule("init_model", model_problems, "the init checkpoint streams and holds together; or a scratch model"),
        Rule("freeze_within_encoder", freeze_within_encoder, "adapt.freeze.encoder_layers <= encoder layers"),
        Rule("training_cuts_fit", training_cut_problems, "a training cut passes the duration filters and batch"),
    ),
)


def check_finetune(cfg: DictConfig) -> None:
    """Every check of a fine-tuning config, in seconds and before any model is built; raises
    :class:`UsageError` with one line per mistake."""
    FINETUNE.check(cfg)
