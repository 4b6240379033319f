"""A recovery checkpoint every N steps or minutes, written atomically as last.ckpt, so a crash loses at most that much work."""

from __future__ import annotations

import logging
import time

import torch.distributed as dist
from lightning.pytorch import Callback, Trainer

from recipes.finetune.resume import mid_epoch_checkpoint_point, rng_state, save_last, set_rng_state

log = logging.getLogger(__name__)


class RecoveryCheckpoint(Callback):
    """Keeps every rank's RNG state in each checkpoint (restored before the first batch after a resume), and writes
    ``last.ckpt`` every ``every_n_steps`` steps and/or every ``every_minutes`` minutes, so a crash loses little.

    ``last.ckpt`` goes to the directory of the run's ``ModelCheckpoint`` (which must not use a version counter,
    or it would start writing ``last-v1.ckpt`` beside this one).
    """

    def __init__(self, every_n_steps: int | None = None, every_minutes: float | None = None):
        self.every_n_steps = every_n_steps
        self.every_minutes = every_minutes
        self._last_save = time.monotonic()
        self._saved_step = -1
        self._rng_to_restore: dict | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        step = trainer.global_step
        if step == self._saved_step or not mid_epoch_checkpoint_point(trainer):
            return  # this step is saved already (e.g. at the epoch's end, or the checkpoint resumed from)
        due_steps = bool(self.every_n_steps) and step > 0 and step % self.every_n_steps == 0
        due_time = bool(self.every_minutes) and time.monotonic() - self._last_save >= 60 * self.every_minutes
        # Ranks' clocks differ: all save if any is due, as the save is collective.
        if self.every_minutes and trainer.world_size > 1:
            due_time = trainer.strategy.reduce_boolean_decision(due_time, all=False)
        if due_steps or due_time:
            save_last(trainer)

    def on_save_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict) -> None:
        self._last_save, self._saved_step = time.monotonic(), trainer.global_step
        states = [rng_state()]
        if trainer.world_size > 1:  # every rank runs this; only rank 0 writes the file
            states = [None] * trainer.world_size
            dist.all_gather_object(states, rng_state())
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, trainer: Trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states is None:
            log.warning(
                "Checkpoint has no RNG states (written before this recipe kept them): resumed training will "
                "draw different lookaheads and augmentations than an uninterrupted run"
            )
        elif len(states) != trainer.world_size:
            log.warning(
                "Checkpoint has RNG states of %d ranks, this run has %d: RNG streams start afresh",
                len(states),
                trainer.world_size,
            )
        else:
            self._rng_to_restore = states[trainer.global_rank]
        self._saved_step = checkpoint["global_step"]
