"""Fine-tuning (or pre-training) of the cache-aware FastConformer-RNNT with plain Lightning."""
from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recipes.model import build_model, normalised_probs
from recipes.resume import ResumableBatches, newest_complete_checkpoint

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"
FINISHED = "finished.json"  # written when training reached max_steps; scripts skip a finished run by it


def check_config(cfg: DictConfig) -> None:
    """Catch config mistakes before any model is loaded or GPU time is spent."""
    problems = []
    for left, right in cfg.model.att_context_size:
        if right < 0 or left % (right + 1):
            problems.append(f"model.att_context_size [{left}, {right}]: chunked_limited needs right >= 0 and "
                            f"left divisible by right + 1 ({right + 1})")
    try:
        normalised_probs(cfg.model.att_context_size, cfg.model.att_context_probs)
    except ValueError as err:
        problems.append(str(err))
    init_from = cfg.model.init_from
    if init_from and init_from.endswith(".nemo") and not Path(init_from).is_file():
        problems.append(f"model.init_from={init_from}: no such .nemo file")
    for key in ("input_cfg", "cuts_path", "manifest_filepath"):
        path = cfg.data.train_ds.get(key)
        if isinstance(path, str) and not Path(path).exists():
            problems.append(f"data.train_ds.{key}={path}: not found (run data_prep first)")
    if cfg.trainer.get("max_steps", -1) <= 0:
        problems.append("trainer.max_steps must be > 0: Lhotse dataloaders have no length, so steps bound training")
    if problems:
        raise ValueError("Invalid configuration:\n  - " + "\n  - ".join(problems))


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path`` when given; else, with ``resume`` on, the run's newest complete checkpoint (see
    :func:`recipes.resume.newest_complete_checkpoint`)."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    newest = newest_complete_checkpoint(Path(cfg.paths.run_dir)) if cfg.resume else None
    if newest is not None:
        log.info("Resuming from %s", newest)
    return None if newest is None else str(newest)


def train_data_config(train_ds: DictConfig, global_rank: int) -> DictConfig:
    """The training loader's config for this rank, resolved (NeMo keeps it in the model config).

    ``shard_seed: randomized`` gives each Lhotse dataloader worker its own shard order, but with ``num_workers: 0``
    Lhotse takes the seed from Python's global RNG state, which is the same on every rank: each rank would read
    the same batches. An iterable (Shar, ``input_cfg``) loader then gets ``seed + rank`` instead; a map-style
    one (``cuts_path``) is split across ranks by its sampler, which needs the same seed everywhere."""
    resolved = OmegaConf.to_container(train_ds, resolve=True)
    iterable = any(resolved.get(key) for key in ("input_cfg", "shar_path", "is_tarred"))
    if resolved.get("shard_seed") == "randomized" and not resolved.get("num_workers") and iterable:
        resolved["shard_seed"] = resolved["seed"] + global_rank
    return OmegaConf.create(resolved)


def build_loggers(logger_cfg: DictConfig, run_dir: Path) -> list:
    """Instantiate the configured loggers; a wandb run keeps one id per run directory so a resumed or
    requeued job continues the same run."""
    loggers = []
    for conf in (logger_cfg or {}).values():
        overrides = {}
        if "WandbLogger" in conf._target_ and not conf.get("id"):
            id_file = run_dir / "wandb_run_id"
            if not id_file.is_file():
                id_file.write_text(uuid.uuid4().hex[:12])
            overrides["id"] = id_file.read_text().strip()
        loggers.append(instantiate(conf, **overrides))
    return loggers


def train(cfg: DictConfig) -> pl.Trainer:
    """Build everything from ``cfg`` and fit; returns the finished trainer."""
    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The run's own record of what it trained: export and evaluation rebuild the model from it.
    OmegaConf.save(cfg, run_dir / RUN_CONFIG, resolve=True)
    (run_dir / FINISHED).unlink(missing_ok=True)  # a longer schedule (larger max_steps) makes it unfinished
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg.logger, run_dir))
    model = build_model(cfg.model, trainer)
    # NeMo stores these in the model config: hand it resolved copies, free of this config's interpolations.
    model.setup_training_data(train_data_config(cfg.data.train_ds, trainer.global_rank))
    model.setup_validation_data(OmegaConf.create(OmegaConf.to_container(cfg.data.validation_ds, resolve=True)))
    # NeMo keeps the loader it built in _train_dl; Lightning gets it as a resumable stream.
    trainer.fit(model, train_dataloaders=ResumableBatches(model._train_dl, trainer), ckpt_path=resume_checkpoint(cfg))
    if trainer.is_global_zero and trainer.global_step >= cfg.trainer.max_steps:
        (run_dir / FINISHED).write_text(json.dumps({"step": trainer.global_step}) + "\n")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # else a later training in this process would log into this run
    return trainer
