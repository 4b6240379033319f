"""Exact resume: a re-run of the same command continues the interrupted run as if it had never stopped.

Four things make a resumed run bit-identical to an uninterrupted one (``tests/test_resume.py``):

- **Data position.** :class:`ResumableBatches` makes the training loader one endless stream across Lightning's
  pseudo-epochs (else every epoch would restart the Lhotse stream from its first batch) and is ``state_dict``-able,
  so Lightning stores the position in the checkpoint (``loops.fit_loop.state_dict.combined_loader``). The position
  is Lightning's own count of finished batches, not of batches fetched: its fetcher runs one batch ahead.
  On resume the stream is rebuilt from the same seeds and fast-forwarded by that many batches (Lhotse 1.33's
  iterable Shar loading keeps no position of its own), so the skipped batches are read again once.
- **RNG streams.** :class:`RecoveryCheckpoint` stores every rank's Python ``random`` (NeMo's per-step lookahead
  draw), numpy and torch (CPU and CUDA: SpecAugment, dropout, dither) states and puts them back just before the
  first batch after a resume.
- **Where a checkpoint is taken.** Mid-epoch checkpoints (every N steps / T minutes, and on a signal, see
  :mod:`recipes.preemption`) are written when a batch *starts*: all of Lightning's counters are then at a finished
  step (at ``on_train_batch_end`` its batch counter is one short and a resumed epoch would run one batch more);
  never at an epoch's first batch (see :func:`mid_epoch_checkpoint_point`).
- **Which checkpoint.** :func:`newest_complete_checkpoint` picks the newest checkpoint that loads, skipping a
  truncated one with a warning; :class:`AtomicCheckpointIO` makes truncation by our own writes impossible.
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write ``<name>.partial`` beside the checkpoint, fsync, then rename: a reader sees the old file or the new one.

    Lightning's own ``_atomic_save`` stages the file in the system temp dir (often another filesystem than the run
    directory on a cluster, where the final move is a copy that a kill can cut short) and holds it in memory twice.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole Lightning checkpoint. Memory-mapped, so even a multi-GB file is checked in
    moments (the zip index at the end of the file is what a truncated copy lacks)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return isinstance(checkpoint, dict) and "state_dict" in checkpoint and "loops" in checkpoint
    except Exception:  # noqa: BLE001 - any reason it does not load means it cannot be resumed from
        return False


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run that loads: any ``checkpoints/*.ckpt`` and Lightning's
    SLURM ``hpc_ckpt_*.ckpt``; a truncated or corrupt one is skipped with a warning and the one before used."""
    candidates = [*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_complete(path):
            return path
        log.warning("Skipping %s: not a complete checkpoint (truncated or corrupt); trying the one before", path)
    return None


class ResumableBatches:
    """The training loader as one endless, resumable stream of batches.

    Lightning re-iterates its training loader at every (pseudo-)epoch; this keeps one iterator across them (a
    finite loader starts its next pass when one ends). ``state_dict`` gives the number of batches the trainer has
    finished, which Lightning saves in the checkpoint; ``load_state_dict`` makes the rebuilt stream skip them.
    """

    def __init__(self, loader, trainer: Trainer):
        self.loader = loader
        self.trainer = trainer
        self._skip = 0
        self._batches: Iterator | None = None

    def __iter__(self) -> Iterator:
        if self._batches is None:
            self._batches = self._stream()
        return self._batches

    def _stream(self) -> Iterator:
        skip, self._skip = self._skip, 0
        if skip:
            start = time.perf_counter()
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                if skip:
                    skip -= 1
                    if not skip:
                        log.info("Data position restored: skipped the finished batches in %.1f s",
                                 time.perf_counter() - start)
                    continue
                yield batch
            if empty:
                return

    def state_dict(self) -> dict:
        return {"batches": self.trainer.fit_loop.epoch_loop.batch_progress.total.completed}

    def load_state_dict(self, state: dict) -> None:
        self._skip = state["batches"]
        self._batches = None


def mid_epoch_checkpoint_point(trainer: Trainer) -> bool:
    """Whether a mid-epoch checkpoint may be taken as this batch starts: it begins an optimizer step (no gradients
    half accumulated, which a checkpoint would not hold) and is not an epoch's first batch (resumed from there,
    Lightning would validate again; the epoch-end checkpoint holds that step anyway)."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return done > 0 and done % trainer.accumulate_grad_batches == 0


def rng_state() -> dict:
    """This process's random number generators, as :func:`set_rng_state` takes them."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
            log.warning("Checkpoint has no RNG states (written before this recipe kept them): resumed training will "
                        "draw different lookaheads and augmentations than an uninterrupted run")
        elif len(states) != trainer.world_size:
            log.warning("Checkpoint has RNG states of %d ranks, this run has %d: RNG streams start afresh",
                        len(states), trainer.world_size)
        else:
            self._rng_to_restore = states[trainer.global_rank]
        self._saved_step = checkpoint["global_step"]


def last_checkpoint_path(trainer: Trainer) -> Path:
    return Path(trainer.checkpoint_callback.dirpath) / LAST


def save_last(trainer: Trainer) -> Path:
    """Write ``last.ckpt`` now (collective under DDP: every rank calls it, rank 0 writes)."""
    path = last_checkpoint_path(trainer)
    trainer.save_checkpoint(path)
    log.info("step %d: saved %s", trainer.global_step, path)
    return path
