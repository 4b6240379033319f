"""``recipes.transcribe``'s config checked before NeMo is imported: every mistake at once, one line each."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig

from recipes.errors import UsageError
from recipes.model_files import resolve_model_file
from recipes.transcribe.channels import parse_channel

CAPTION_FORMATS = ("srt", "vtt")
DEVICES = ("auto", "cpu", "cuda")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def lookahead_problem(value) -> str | None:
    """``lookahead`` is null, a chunk in ms, or ``[left, right]`` (which of them the model has is checked once it
    is loaded)."""
    if value is None or (_is_int(value) and value > 0):
        return None
    if isinstance(value, (list, ListConfig)) and len(value) == 2 and all(_is_int(v) and v >= 0 for v in value):
        return None
    return f"lookahead={value}: give a chunk in ms (e.g. 560), [left, right] (e.g. [70,6]) or null for the default"


def _writable(path: Path) -> bool:
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK)


def check_transcribe(cfg: DictConfig) -> None:
    """Raise a :class:`UsageError` listing every problem of ``cfg`` (``conf/transcribe.yaml``)."""
    problems = [f"{key}: required, and not given (add {key}=...)" for key in ("model", "audio") if cfg[key] == "???"]
    if problems:
        raise UsageError("\n".join(problems))
    if not Path(str(cfg.audio)).exists():
        problems.append(f"audio={cfg.audio}: no such file or folder: give an audio file, a folder or a manifest")
    problems += [p for p in [lookahead_problem(cfg.lookahead)] if p]
    try:
        parse_channel(cfg.channel, "channel")
    except UsageError as err:
        problems.append(str(err))
    if not _is_int(cfg.batch_size) or cfg.batch_size < 1:
        problems.append(f"batch_size={cfg.batch_size}: must be an integer >= 1")
    if cfg.device not in DEVICES:
        problems.append(f"device={cfg.device}: use one of {', '.join(DEVICES)}")
    elif cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("device=cuda: no CUDA device here: use device=auto or device=cpu")
    if cfg.captions is not None and cfg.captions not in CAPTION_FORMATS:
        problems.append(f"captions={cfg.captions}: use srt, vtt or null (no captions)")
    if not str(cfg.output).endswith(".jsonl") or not _writable(Path(str(cfg.output))):
        problems.append(f"output={cfg.output}: give a .jsonl file in a folder you can write to")
    try:
        resolve_model_file(cfg.model, "model")
    except UsageError as err:
        problems.append(str(err))
    if problems:
        raise UsageError("\n".join(problems))
