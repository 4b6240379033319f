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
  :mod:`recipes.finetune.callbacks.preemption`) are written when a batch *starts*: all of Lightning's counters are then at a finished
  step (at ``on_train_batch_end`` its batch counter is one short and a resumed epoch would run one batch more);
  never at an epoch's first batch (see :func:`mid_epoch_checkpoint_point`).
- **Which checkpoint.** :func:`newest_complete_checkpoint` picks the newest checkpoint that loads, skipping a
  truncated one with a warning; :class:`AtomicCheckpointIO` makes truncation by our own writes impossible."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from recipes.run_dir import write_atomic

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write ``.partial.<name>`` beside the checkpoint, fsync, then rename: a reader sees the old file or the new one.

    Lightning's own ``_atomic_save`` stages the file in the system temp dir (often another filesystem than the run
    directory on a cluster, where the final move is a copy that a kill can cut short) and holds it in memory twice.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        write_atomic(path, lambda tmp: torch.save(checkpoint, tmp), fsync=True)


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole Lightning checkpoint a run can resume from (with the optimizer's state: step
    checkpoints may hold weights only). Memory-mapped, so even a multi-GB file is checked in moments (the zip index
    at the end of the file is what a truncated copy lacks)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return isinstance(checkpoint, dict) and {"state_dict", "loops", "optimizer_states"} <= checkpoint.keys()
    except Exception:  # noqa: BLE001 - any reason it does not load means it cannot be resumed from
        return False


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run that loads: any ``checkpoints/*.ckpt`` and Lightning's
    SLURM ``hpc_ckpt_*.ckpt``; a truncated or corrupt one, or one of weights only (step checkpoints, see
    ``callbacks.checkpoint.optimizer_state``), is skipped with a warning and the one before used."""
    # [!.]: not a write in progress (recipes.run_dir.atomic_path)
    candidates = [*(run_dir / "checkpoints").glob("[!.]*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_complete(path):
            return path
        log.warning(
            "Skipping %s: weights only, truncated or corrupt: not one to resume from; trying the one before", path
        )
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
                        log.info(
                            "Data position restored: skipped the finished batches in %.1f s",
                            time.perf_counter() - start,
                        )
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


def last_checkpoint_path(trainer: Trainer) -> Path:
    return Path(trainer.checkpoint_callback.dirpath) / LAST


def save_last(trainer: Trainer) -> Path:
    """Write ``last.ckpt`` now (collective under DDP: every rank calls it, rank 0 writes)."""
    path = last_checkpoint_path(trainer)
    trainer.save_checkpoint(path)
    log.info("step %d: saved %s", trainer.global_step, path)
    return path
