"""Preemption: on SIGUSR1 (SLURM's warning signal) or SIGTERM, save ``last.ckpt`` at the next step and exit 75.

The contract for schedulers and scripts: exit status 0 means training finished; :data:`EXIT_PREEMPTED` (75,
``EX_TEMPFAIL``) means a checkpoint was saved on a signal and the same command, run again, resumes from it.

- The handler only sets a flag; the checkpoint is written at the start of the next batch that begins an optimizer
  step (never inside the handler: Lightning #21406 reports hangs when saving there; never in the middle of a
  gradient accumulation, whose partial gradients a checkpoint does not hold), except an epoch's first batch
  (:func:`recipes.finetune.resume.mid_epoch_checkpoint_point`): a signal during the epoch-end evaluation stops the run
  one step later.
- Under DDP the flag is all-reduced at every such batch, so all ranks stop at the same step even when only some
  of them got the signal.
- Bounded: a second SIGTERM exits at once, and ``sigterm_grace_s`` after the first SIGTERM a watchdog thread
  exits (status 143) whatever the main thread is doing, e.g. waiting in a collective for a rank that died.
  SIGUSR1 arms no watchdog: it is an early warning, and SLURM follows it with SIGTERM.
- The handlers replace Lightning's for the duration of ``fit`` (installed at ``on_train_start``, after Lightning
  registered its own; Lightning puts the previous ones back at teardown), so its SLURM auto-requeue handler, which
  saves inside the handler, never runs, with or without SLURM variables in the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from lightning.pytorch import Callback, Trainer

from recipes.errors import EXIT_PREEMPTED
from recipes.finetune.resume import mid_epoch_checkpoint_point, save_last

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Raised out of ``trainer.fit`` once the signal checkpoint is written; the entry point exits with 75."""


class PreemptionCheckpoint(Callback):
    def __init__(self, signals: tuple[str, ...] = ("SIGUSR1", "SIGTERM"), sigterm_grace_s: float = 60.0):
        self.signals = [signal.Signals[name] for name in signals]
        self.sigterm_grace_s = sigterm_grace_s
        self.received: signal.Signals | None = None
        self._watchdog: threading.Timer | None = None

    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        for signum in self.signals:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        signum = signal.Signals(signum)
        if signum == signal.SIGTERM:
            if self._watchdog is not None:
                os._exit(128 + signum)  # second SIGTERM: the user or scheduler insists
            self._watchdog = threading.Timer(self.sigterm_grace_s, os._exit, (128 + signum,))
            self._watchdog.daemon = True
            self._watchdog.start()
        if self.received is None:
            self.received = signum
            # os.write: the logging module's locks are not safe to take inside a signal handler.
            os.write(
                2,
                f"{signum.name} received: saving a checkpoint at the next step, then exiting with "
                f"{EXIT_PREEMPTED}\n".encode(),
            )

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        if not mid_epoch_checkpoint_point(trainer):
            return
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            path = save_last(trainer)
            reason = self.received.name if self.received is not None else "another rank's signal"
            raise Preempted(
                f"{reason}: stopped at step {trainer.global_step}, checkpoint {path}; run the same "
                f"command again to resume"
            )
