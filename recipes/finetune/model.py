"""Build the cache-aware FastConformer-RNNT to train: restored from a ``.nemo`` / pretrained name, or from scratch.

Both paths end in one NeMo model config, so the released 0.6B checkpoint and the embedded tiny model
go through exactly the same code.
"""

from __future__ import annotations

import ctypes
import logging
from fractions import Fraction
from pathlib import Path

import torch
from hydra.utils import get_class
from lightning.pytorch import Trainer
from nemo.collections.asr.models import ASRModel
from omegaconf import DictConfig, OmegaConf, open_dict

from recipes.errors import UsageError
from recipes.finetune.loss import use_vectorized_loss
from recipes.finetune.trained_with import Setting, keep_trained_with, loss_settings, settings_table, with_loss_name
from recipes.model_files import nemo_config, resolve_model_file

log = logging.getLogger(__name__)

VECTORIZED = "vectorized"  # rnnt_loss name of recipes.finetune.loss.VectorizedRNNTLoss


def normalised_probs(att_context_size: list, att_context_probs: list | None) -> list[float]:
    """One weight per lookahead summing to exactly 1.0, as NeMo's encoder demands (it compares with ``!= 1``);
    ``recipes.checks`` has made sure they sum to 1 up to float rounding."""
    if att_context_probs is None:
        att_context_probs = [1.0] * len(att_context_size)
    weights = [Fraction(p).limit_denominator(10**6) for p in att_context_probs]
    total = sum(weights)
    probs = [float(w / total) for w in weights[:-1]]
    probs.append(1.0 - sum(probs))
    return probs


def release_freed_memory() -> None:
    """Give the memory freed while a model was built or restored back to the system: glibc keeps it in the process
    (restoring the 0.6B model leaves about 2.4 GiB of freed state-dict memory in its RSS otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resolve_rnnt_loss(name: str, trainer: Trainer | None) -> str:
    """``auto``: this repo's vectorised PyTorch RNNT loss on CPU (NeMo's kernels are slow there), NeMo's
    default CUDA kernels on GPU."""
    if name != "auto":
        return name
    on_gpu = trainer is not None and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
    return "default" if on_gpu else VECTORIZED


def loss_for(nemo_cfg: DictConfig, implementation: str) -> DictConfig:
    """The model's loss section as ``implementation`` computes it: this repo's vectorised loss stands in for the
    model's own NeMo loss (swapped in by :func:`build_model`), a NeMo loss named on purpose replaces it. FastEmit
    and clamp go along; NeMo's pure-PyTorch loss has neither, so a model that trains with them refuses it."""
    if implementation == VECTORIZED:
        return nemo_cfg.loss
    settings = loss_settings(nemo_cfg.loss)
    if implementation == "pytorch" and (settings["fastemit_lambda"] or settings["clamp"] > 0):
        raise UsageError(
            f"model.rnnt_loss=pytorch: NeMo's pytorch RNNT loss has no FastEmit or clamp, and the model trains with "
            f"fastemit_lambda={settings['fastemit_lambda']:g}, clamp={settings['clamp']:g}: use model.rnnt_loss="
            f"vectorized (or auto), or set model.loss.fastemit_lambda=0 model.loss.clamp=-1"
        )
    return OmegaConf.create(with_loss_name(nemo_cfg.loss, implementation))


def model_config(cfg: DictConfig, trainer: Trainer | None = None) -> tuple[DictConfig, Path | None, list[Setting]]:
    """The NeMo config to build: the config of ``init_from`` (or ``architecture``) with what the model was trained
    with kept (:mod:`recipes.finetune.trained_with`) and the recipe's lookaheads and optimizer; the ``.nemo`` whose
    weights to load (None when training from scratch); and the kept settings with their sources."""
    if cfg.init_from:
        checkpoint = resolve_model_file(cfg.init_from, "model.init_from", cfg.get("init_revision"))
        base = nemo_config(checkpoint, "model.init_from")
    else:
        checkpoint = None
        base = cfg.architecture
    nemo_cfg, settings = keep_trained_with(base, cfg)
    with open_dict(nemo_cfg):
        # NeMo keeps the restored encoder's lookaheads unless the config it is built from says otherwise.
        nemo_cfg.encoder.att_context_size = OmegaConf.to_container(cfg.att_context_size)
        nemo_cfg.encoder.att_context_probs = normalised_probs(cfg.att_context_size, cfg.att_context_probs)
        nemo_cfg.loss = loss_for(nemo_cfg, resolve_rnnt_loss(cfg.rnnt_loss, trainer))
        nemo_cfg.optim = OmegaConf.to_container(cfg.optim, resolve=True)
        # Data loaders are attached by the recipe; never let NeMo build the ones stored in a checkpoint.
        for key in ("train_ds", "validation_ds", "test_ds"):
            nemo_cfg.pop(key, None)
    return nemo_cfg, checkpoint, settings


def build_model(cfg: DictConfig, trainer: Trainer | None = None) -> ASRModel:
    """Instantiate the model described by the ``model`` config group, weights loaded when ``init_from`` is set."""
    nemo_cfg, checkpoint, settings = model_config(cfg, trainer)
    if checkpoint is None:
        model = get_class(cfg.model_class)(cfg=nemo_cfg, trainer=trainer)
    else:
        model = ASRModel.restore_from(
            str(checkpoint), override_config_path=nemo_cfg, map_location=torch.device("cpu"), trainer=trainer
        )
    if resolve_rnnt_loss(cfg.rnnt_loss, trainer) == VECTORIZED:
        use_vectorized_loss(model.loss, **loss_settings(model.cfg.loss))
    release_freed_memory()
    log.info(
        "Model: %s, %.1fM parameters, lookaheads %s with probs %s",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        model.encoder.att_context_size_all,
        model.encoder.att_context_probs,
    )
    log.info("Trained with (kept from the model unless overridden):\n%s", "\n".join(settings_table(settings)))
    return model
