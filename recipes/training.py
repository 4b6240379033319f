"""Fine-tuning (or pre-training) of the cache-aware FastConformer-RNNT with plain Lightning."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recipes.checks import RUN_CONFIG, check_finetune
from recipes.model import build_model

log = logging.getLogger(__name__)



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
    check_finetune(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The run's own record of what it trained: export and evaluation rebuild the model from it.
    OmegaConf.save(cfg, run_dir / RUN_CONFIG, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
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
