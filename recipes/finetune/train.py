"""Fine-tuning (or pre-training) of the cache-aware FastConformer-RNNT with plain Lightning."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_finetune
from recipes.errors import abort, building
from recipes.finetune.continuous import add_continuous_speech
from recipes.finetune.model import build_model
from recipes.finetune.resume import ResumableBatches, newest_complete_checkpoint
from recipes.model_files import file_record, resolve_model_file
from recipes.run_dir import RUN_CONFIG

log = logging.getLogger(__name__)

FINISHED = "finished.json"  # written when training reached max_steps; scripts skip a finished run by it


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path`` when given; else, with ``resume`` on, the run's newest complete checkpoint (see
    :func:`recipes.finetune.resume.newest_complete_checkpoint`)."""
    if cfg.ckpt_path:
        return cfg.ckpt_path
    newest = newest_complete_checkpoint(Path(cfg.paths.run_dir)) if cfg.resume else None
    if newest is not None:
        step = torch.load(newest, map_location="cpu", mmap=True, weights_only=False)["global_step"]
        log.info("Resuming from %s (step %d)", newest, step)
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
    for name, conf in (logger_cfg or {}).items():
        overrides = {}
        if "WandbLogger" in conf._target_ and not conf.get("id"):
            id_file = run_dir / "wandb_run_id"
            if not id_file.is_file():
                id_file.write_text(uuid.uuid4().hex[:12])
            overrides["id"] = id_file.read_text().strip()
        with building(f"logger.{name}"):
            loggers.append(instantiate(conf, **overrides))
    return loggers


def build_callbacks(cfg: DictConfig) -> list:
    """The configured callbacks, then the fine-tuning controls (freezing, per-module learning rates, L2-SP:
    recipes.finetune.callbacks.adaptation); a failure names its key."""
    callbacks = []
    for name, conf in (cfg.callbacks or {}).items():
        with building(f"callbacks.{name}"):
            callbacks.append(instantiate(conf))
    if cfg.get("adapt"):
        with building("adapt"):
            callbacks.append(instantiate(cfg.adapt))
    return callbacks


def build_model_and_data(cfg: DictConfig, trainer: pl.Trainer):
    """The model with its optimizer and data loaders set up; whatever NeMo or Lhotse raises names its key."""
    source = ("model.init_from", cfg.model.init_from) if cfg.model.init_from else ("model.architecture", None)
    with building(*source):
        model = build_model(cfg.model, trainer)
    with building("model.optim"):  # Lightning builds it again at fit: built here only to name a failure's key
        model.setup_optimization()
    # NeMo stores these in the model config: hand it resolved copies, free of this config's interpolations.
    with building("data.train_ds"):
        model.setup_training_data(train_data_config(cfg.data.train_ds, trainer.global_rank))
        add_continuous_speech(model._train_dl, cfg.data.get("continuous"), cfg.seed)  # a share of batches as long cuts
    with building("data.validation_ds"):
        model.setup_validation_data(OmegaConf.create(OmegaConf.to_container(cfg.data.validation_ds, resolve=True)))
    return model


class LoaderWatchdog:
    """The training loader, stopped with a one-line error when one batch takes longer than ``timeout_s`` to come.

    A loader whose filters keep no cut (Lhotse repeats a Shar stream endlessly, filtering every pass) never yields
    and never ends; the checks catch the duration filters before the loader is built, this catches the rest (e.g.
    NeMo's token-rate filters, unreadable data). Only the time spent waiting for a batch counts, not the steps,
    validations and checkpoints between batches."""

    def __init__(self, loader: Iterable, timeout_s: float):
        self.loader = loader
        self.timeout_s = timeout_s
        self._deadline: float | None = None
        threading.Thread(target=self._watch, name="loader-watchdog", daemon=True).start()

    def __iter__(self) -> Iterator:
        batches = iter(self.loader)
        while True:
            self._deadline = time.monotonic() + self.timeout_s
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self._deadline = None
            yield batch

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout_s / 4))
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                abort(
                    "recipes.finetune",
                    [
                        f"data.train_ds: the training loader gave no batch in {self.timeout_s:g} s "
                        f"(loader_timeout_s): its filters may keep no cut (min_duration, max_duration, min_tps, "
                        f"max_tps...) or its data cannot be read: check data.train_ds, or raise loader_timeout_s"
                    ],
                )


def train(cfg: DictConfig) -> pl.Trainer:
    """Build everything from ``cfg`` and fit; returns the finished trainer."""
    check_finetune(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The run's own record of what it trained: export and evaluation rebuild the model from it.
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.model.init_from:  # the file a name or path resolved to, so the same weights can be found again
        init_file = resolve_model_file(cfg.model.init_from, "model.init_from", cfg.model.get("init_revision"))
        run_config["init_from_file"] = file_record(init_file, cfg.model.init_from, cfg.model.get("init_revision"))
    OmegaConf.save(OmegaConf.create(run_config), run_dir / RUN_CONFIG)
    (run_dir / FINISHED).unlink(missing_ok=True)  # a longer schedule (larger max_steps) makes it unfinished
    callbacks, loggers = build_callbacks(cfg), build_loggers(cfg.logger, run_dir)
    with building("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    # One line per rank: where a multi-node job's ranks run (SLURM: node from SLURM_NODEID, device from SLURM_LOCALID).
    log.info(
        "rank %d of %d: node %d, local rank %d, host %s, device %s",
        *(trainer.global_rank, trainer.world_size, trainer.node_rank, trainer.local_rank),
        *(socket.gethostname(), trainer.strategy.root_device),
    )
    model = build_model_and_data(cfg, trainer)
    # NeMo keeps the loader it built in _train_dl; Lightning gets it as a resumable, watched stream.
    batches = ResumableBatches(LoaderWatchdog(model._train_dl, cfg.loader_timeout_s), trainer)
    trainer.fit(model, train_dataloaders=batches, ckpt_path=resume_checkpoint(cfg))
    if trainer.is_global_zero and trainer.global_step >= cfg.trainer.max_steps:
        (run_dir / FINISHED).write_text(json.dumps({"step": trainer.global_step}) + "\n")
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # else a later training in this process would log into this run
    return trainer
