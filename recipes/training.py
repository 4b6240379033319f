"""Fine-tuning (or pre-training) of the cache-aware FastConformer-RNNT with plain Lightning."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recipes.model import build_model, normalised_probs

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"


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
    """``ckpt_path`` when given; else, with ``resume`` on, the newest of ``<run_dir>/checkpoints/last.ckpt`` and
    the ``hpc_ckpt_*.ckpt`` Lightning writes when SLURM signals preemption (SIGUSR1)."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    run_dir = Path(cfg.paths.run_dir)
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not cfg.resume or not candidates:
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    log.info("Resuming from %s", newest)
    return str(newest)


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
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    if cfg.get("adapt"):  # freezing, per-module learning rates, L2-SP (recipes.adaptation)
        callbacks.append(instantiate(cfg.adapt))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg.logger, run_dir))
    model = build_model(cfg.model, trainer)
    # NeMo stores these in the model config: hand it resolved copies, free of this config's interpolations.
    model.setup_training_data(OmegaConf.create(OmegaConf.to_container(cfg.data.train_ds, resolve=True)))
    model.setup_validation_data(OmegaConf.create(OmegaConf.to_container(cfg.data.validation_ds, resolve=True)))
    trainer.fit(model, ckpt_path=resume_checkpoint(cfg))
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # else a later training in this process would log into this run
    return trainer
