"""How a model is put into streaming evaluation and back, and NeMo's per-call type checks switched off."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
from nemo.core.classes.common import typecheck


@contextmanager
def evaluation_mode(model, att_context_size: Sequence[int]):
    """Eval mode with ``att_context_size`` as the encoder's default; all restored afterwards.

    Also no cross-rank sync of the encoder's position-encoding length: NeMo all-reduces it in every forward once
    torch.distributed is up, and under DDP each rank streams its own share of utterances, with its own number of
    forwards, so the ranks' all-reduces would pair up wrongly and hang (the DDP hang in docs/training.md)."""
    encoder = model.encoder
    was_training, previous = model.training, list(encoder.att_context_size)
    was_synced = getattr(encoder, "sync_max_audio_length", False)
    model.eval()
    encoder.set_default_att_context_size(list(att_context_size))
    encoder.sync_max_audio_length = False
    try:
        yield
    finally:
        encoder.sync_max_audio_length = was_synced
        encoder.set_default_att_context_size(previous)
        model.train(was_training)


def resync_position_encoding(model) -> None:
    """After each rank evaluated its own share (see :func:`evaluation_mode`), let the ranks agree again on the
    encoder's position-encoding length: DDP broadcasts buffers from rank 0 and needs equal shapes. Every rank
    must call it (one all-reduce); without torch.distributed it does nothing."""
    encoder = model.encoder
    if getattr(encoder, "sync_max_audio_length", False) and torch.distributed.is_initialized():
        encoder.update_max_seq_length(seq_length=encoder.max_audio_length, device=model.device)


@contextmanager
def no_typechecks():
    """NeMo checks neural types on every module call; that costs more than a tiny model's chunk step."""
    typecheck.set_typecheck_enabled(enabled=False)
    try:
        yield
    finally:
        typecheck.set_typecheck_enabled(enabled=True)
