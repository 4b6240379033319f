"""Adapting a pre-trained model without forgetting what it knew: freezing, per-module learning rates with
layer-wise decay down the encoder, and a pull toward the base weights (decoupled L2-SP).

All of it is one Lightning callback (:class:`Adaptation`, config group ``adapt``), so a run without it trains
exactly as before:

- ``setup`` (before ``configure_optimizers``) freezes modules and replaces NeMo's
  ``setup_optimizer_param_groups`` (the hook NeMo documents for per-layer learning rates) on the model, so
  NeMo's own ``setup_optimization`` builds the optimizer and its scheduler from our groups; a resumed run
  gets the same groups, so its optimizer state loads as saved;
- L2-SP runs as an optimizer step post-hook: after every step each trainable weight moves
  ``lr * strength`` of the way back toward its base value. That is AdamW's decoupled weight decay centred on the
  base weights instead of zero; the penalty-gradient form of L2-SP would be rescaled by Adam's per-weight
  normaliser, so its strength would mean something different for every weight.
"""

from __future__ import annotations

import logging
import re
from typing import Mapping

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BaseFinetuning

from recipes.errors import UsageError

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


def frozen_modules(model, encoder: bool = False, encoder_layers: int = 0, decoder: bool = False) -> list:
    """The modules to freeze: the whole encoder, or its subsampling and lowest ``encoder_layers`` conformer
    layers, and/or the prediction network (``decoder``)."""
    layers = model.encoder.layers
    if not 0 <= encoder_layers <= len(layers):
        raise UsageError(
            f"adapt.freeze.encoder_layers={encoder_layers}: the encoder has {len(layers)} layers; "
            f"give 0..{len(layers)} (or adapt.freeze.encoder=true for all of it)"
        )
    modules = []
    if encoder:
        modules.append(model.encoder)
    elif encoder_layers:
        modules += [model.encoder.pre_encode, *layers[:encoder_layers]]
    if decoder:
        modules.append(model.decoder)
    return modules


def module_of(name: str) -> str:
    """Which learning-rate group a parameter belongs to: ``encoder``, ``decoder`` (prediction network),
    ``joint``, or ``other`` (e.g. a hybrid model's auxiliary CTC head)."""
    head = name.split(".", 1)[0]
    return head if head in ("encoder", "decoder", "joint") else "other"


def encoder_depth(name: str, n_layers: int) -> int:
    """Distance of an encoder parameter from the top: 0 for the last conformer layer, ``n_layers`` for the
    subsampling and anything else below the first layer."""
    match = _LAYER.match(name)
    return n_layers - 1 - int(match.group(1)) if match else n_layers


def param_groups(model, base_lr: float, lr: Mapping[str, float | None], layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters, each with its own ``lr`` and a ``name``
    (Lightning's ``LearningRateMonitor`` logs it by that name).

    ``lr`` gives ``encoder`` / ``decoder`` / ``joint`` rates (None: ``base_lr``); encoder layer ``i`` of ``L``
    gets ``lr["encoder"] * layer_decay ** (L - 1 - i)`` and the subsampling ``layer_decay ** L``, so the
    lowest, most general layers move least.
    """
    if not 0 < layer_decay <= 1:
        raise UsageError(f"adapt.layer_decay={layer_decay}: give a factor in (0, 1] (1 = no decay)")
    n_layers = len(model.encoder.layers)
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        module = module_of(name)
        rate = lr.get(module) if lr.get(module) is not None else base_lr
        key = module
        if module == "encoder" and layer_decay != 1:
            depth = encoder_depth(name, n_layers)
            rate *= layer_decay**depth
            key = f"encoder.layers.{n_layers - 1 - depth}" if depth < n_layers else "encoder.pre_encode"
        groups.setdefault(key, {"name": key, "lr": rate, "params": []})["params"].append(param)
    return list(groups.values())


class Adaptation(Callback):
    """Fine-tuning controls from the ``adapt`` config group (see ``conf/adapt/default.yaml``).

    Args:
        freeze: ``{encoder: bool, encoder_layers: int, decoder: bool}``: what not to train (see
            :func:`frozen_modules`).
        lr: ``{encoder, decoder, joint}`` learning rates; None takes ``model.optim.lr``.
        layer_decay: layer-wise learning-rate decay down the encoder (1 = none).
        l2sp: strength of the pull toward the base weights per step (``lr * l2sp`` of the distance; 0 = off).
    """

    def __init__(
        self, freeze: Mapping | None = None, lr: Mapping | None = None, layer_decay: float = 1.0, l2sp: float = 0.0
    ):
        self.freeze = dict(freeze or {})
        self.lr = dict(lr or {})
        self.layer_decay = layer_decay
        self.l2sp = l2sp
        if l2sp < 0:
            raise UsageError(f"adapt.l2sp={l2sp}: give a strength >= 0 (0 = off)")
        unknown = set(self.lr) - {"encoder", "decoder", "joint"}
        if unknown:
            raise UsageError(f"adapt.lr has {sorted(unknown)}: the groups are encoder, decoder and joint")
        self._base: dict[torch.nn.Parameter, torch.Tensor] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        modules = frozen_modules(pl_module, **self.freeze)
        BaseFinetuning.freeze(modules, train_bn=True)
        if modules:
            log.info(
                "Frozen: %d of %d parameters",
                sum(p.numel() for m in modules for p in m.parameters()),
                sum(p.numel() for p in pl_module.parameters()),
            )

        def setup_optimizer_param_groups():
            pl_module._optimizer_param_groups = param_groups(
                pl_module, pl_module.cfg.optim.lr, self.lr, self.layer_decay
            )

        # NeMo's setup_optimization calls this hook, then builds the optimizer and scheduler from the groups.
        pl_module.setup_optimizer_param_groups = setup_optimizer_param_groups
        if self.l2sp:
            # Before a resumed run's weights are restored: these are the base (init_from) weights.
            self._base = {p: p.detach().clone() for p in pl_module.parameters() if p.requires_grad}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.l2sp:
            return
        self._base = {p: base.to(p.device) for p, base in self._base.items()}
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(self._pull_toward_base)

    @torch.no_grad()
    def _pull_toward_base(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        for group in optimizer.param_groups:
            weight = min(group["lr"] * self.l2sp, 1.0)
            for param in group["params"]:
                base = self._base.get(param)
                if base is not None:
                    param.lerp_(base, weight)
