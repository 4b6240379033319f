"""``recipes.finetune``'s named cross-key rules, beside its schema (``recipes/checks/finetune.py``): they run once
every key has passed its row, so they read well-typed values."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, ListConfig

from recipes.checks.models import as_lookahead_list, nemo_encoder
from recipes.schema import is_int, show

PROB_TOLERANCE = (
    1e-6  # att_context_probs may sum to 1 up to float rounding ([0.4, 0.2, 0.2, 0.2] -> 1.0000000000000002)
)
FP16_MIXED = {"16-mixed", "16", 16}


def lookahead_weights(cfg: DictConfig) -> list[str]:
    """One weight per lookahead, summing to 1 within :data:`PROB_TOLERANCE`."""
    sizes, probs = cfg.model.att_context_size, cfg.model.att_context_probs
    if probs is None:
        return []
    key = "model.att_context_probs"
    if len(probs) != len(sizes):
        return [
            f"{key}={show(probs)}: {len(probs)} weights for {len(sizes)} lookaheads in "
            f"model.att_context_size={show(sizes)}: give one weight per lookahead"
        ]
    if abs(sum(probs) - 1.0) > PROB_TOLERANCE:
        return [f"{key}={show(probs)}: the weights sum to {sum(probs):g}, not 1: give probabilities that sum to 1"]
    return []


def min_lr_below_lr(cfg: DictConfig) -> list[str]:
    lr, min_lr = cfg.model.optim.lr, (cfg.model.optim.get("sched") or {}).get("min_lr")
    if min_lr is not None and min_lr > lr:
        return [f"model.optim.sched.min_lr={min_lr}: must be <= model.optim.lr={lr}"]
    return []


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def on_gpu(trainer: DictConfig) -> bool:
    accelerator = trainer.get("accelerator", "auto")
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and visible_gpus() > 0)


def device_problems(cfg: DictConfig) -> list[str]:
    """Accelerator, precision and devices against what this machine provides."""
    trainer = cfg.trainer
    accelerator, precision, devices = trainer.accelerator, trainer.precision, trainer.devices
    gpus = visible_gpus()
    if accelerator in ("gpu", "cuda") and gpus == 0:
        return [
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here (torch.cuda.is_available() "
            f"is False): use trainer=cpu, or run on a GPU node"
        ]
    if not on_gpu(trainer) and precision in FP16_MIXED:
        return [
            f"trainer.precision={precision}: float16 mixed precision needs a GPU; on CPU use 32-true (or bf16-mixed)"
        ]
    if on_gpu(trainer) and gpus and "bf16" in str(precision) and not torch.cuda.is_bf16_supported():
        return [f"trainer.precision={precision}: this GPU has no bfloat16 support: use 16-mixed"]
    wanted = len(devices) if isinstance(devices, ListConfig) else (devices if is_int(devices) and devices > 0 else 0)
    # GPUs only: CPU "devices" are processes (any number runs), and under SLURM each task sees its own share.
    if on_gpu(trainer) and gpus and wanted > gpus and "SLURM_NTASKS" not in os.environ:
        return [
            f"trainer.devices={show(devices)}: only {gpus} GPU(s) visible here: set "
            f"trainer.devices={gpus} or run where {wanted} are visible"
        ]
    return []


def nodes_launched(cfg: DictConfig) -> list[str]:
    """More than one node needs a launcher that starts the other nodes' processes; without one, rank 0 waits
    for them forever."""
    num_nodes = cfg.trainer.num_nodes
    slurm_nodes = os.environ.get("SLURM_NNODES")
    if slurm_nodes is not None and num_nodes != int(slurm_nodes):
        return [
            f"trainer.num_nodes={num_nodes}: this SLURM job has {slurm_nodes} node(s): set "
            f"trainer.num_nodes={slurm_nodes} or sbatch --nodes={num_nodes}"
        ]
    if num_nodes > 1 and slurm_nodes is None and "WORLD_SIZE" not in os.environ:
        return [
            f"trainer.num_nodes={num_nodes}: no cluster launcher here (no SLURM job, no torchrun), so the "
            f"other nodes would never join: submit it with python -m slurm.submit finetune, or use torchrun on each node"
        ]
    return []


def validation_within_steps(cfg: DictConfig) -> list[str]:
    """An integer ``val_check_interval`` counts steps inside a pseudo-epoch (``limit_train_batches``) and must fit
    in it (Lightning refuses it after the model is built) and in the run (else no validation ever runs)."""
    trainer = cfg.trainer
    interval, limit = trainer.get("val_check_interval", 1.0), trainer.get("limit_train_batches")
    if not is_int(interval):
        return []
    if is_int(limit) and interval > limit and trainer.get("check_val_every_n_epoch") is not None:
        return [
            f"trainer.val_check_interval={interval}: more than the {limit} steps of a pseudo-epoch "
            f"(trainer.limit_train_batches): give at most {limit}, or a share such as 1.0"
        ]
    if interval > trainer.max_steps:
        return [
            f"trainer.val_check_interval={interval}: more than trainer.max_steps={trainer.max_steps}, so no "
            f"validation would run: give at most {trainer.max_steps}"
        ]
    return []


def bucketing_off_without_bins(cfg: DictConfig) -> list[str]:
    train = cfg.data.train_ds
    if train.get("use_bucketing") is False and train.get("bucket_duration_bins") is not None:
        return [
            "data.train_ds.use_bucketing=false: NeMo turns bucketing back on while "
            "data.train_ds.bucket_duration_bins is set: also give data.train_ds.bucket_duration_bins=null"
        ]
    return []


def lr_monitor_needs_logger(cfg: DictConfig) -> list[str]:
    if not cfg.get("logger") and (cfg.get("callbacks") or {}).get("lr_monitor"):
        return [
            "logger=none: callbacks.lr_monitor (Lightning's LearningRateMonitor) needs a logger: add "
            "~callbacks.lr_monitor, or keep a logger"
        ]
    return []


def streamed_lookaheads_trained(cfg: DictConfig) -> list[str]:
    """The callbacks stream lookaheads this run trains (``model.att_context_size``), no others."""
    trained = as_lookahead_list(cfg.model.att_context_size)
    problems = []
    for name in ("checkpoint", "lookahead_val_wer"):
        wanted = (cfg.get("callbacks") or {}).get(name, {}).get("lookaheads")
        new = [pair for pair in as_lookahead_list(wanted or []) if pair and pair not in trained]
        if new:
            problems.append(
                f"callbacks.{name}.lookaheads={show(wanted)}: {show(new)} not trained in this run "
                f"(model.att_context_size={show(trained)}): stream lookaheads the run trains"
            )
    return problems


def freeze_within_encoder(cfg: DictConfig) -> list[str]:
    """``adapt.freeze.encoder_layers`` counts layers of the model's encoder (the architecture's, or the init
    checkpoint's, read from its archive)."""
    layers = (cfg.get("adapt") or {}).get("freeze", {}).get("encoder_layers", 0)
    if not layers:
        return []
    encoder = nemo_encoder(cfg.model)
    total = encoder.get("n_layers") if encoder is not None else None
    if total is not None and layers > total:
        return [
            f"adapt.freeze.encoder_layers={layers}: the encoder has {total} layers; give 0..{total} "
            f"(or adapt.freeze.encoder=true for all of it)"
        ]
    return []
