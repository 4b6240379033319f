"""Everything a run leaves on disk and how to find it again: the run config beside the checkpoints, and the one
atomic file write every stage uses."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

RUN_CONFIG = "run_config.yaml"  # written into every run directory by recipes.finetune.train


def run_config_of(checkpoint: Path) -> Path:
    """``<run_dir>/run_config.yaml`` of ``<run_dir>/checkpoints/<name>.ckpt``: what training built the model from."""
    return checkpoint.parent.parent / RUN_CONFIG


@contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffixes, so writers that look at them still work) to write to;
    renamed onto ``path`` when the block succeeds, removed when it fails. Readers (a dashboard, ``cat``, a resumed
    run) see the old file or the new one, never half of one. ``fsync``: flushed to disk before the rename, for
    files a crash must not lose (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial.{path.name}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], object], fsync: bool = False) -> Path:
    """``write(tmp)`` then ``tmp`` renamed onto ``path`` (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path, fsync) as tmp:
        write(tmp)
    return Path(path)
