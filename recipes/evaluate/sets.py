"""Evaluation sets: utterances and references from a Lhotse cuts manifest, sharded over ranks; one audio file read as the engine needs it."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import CutSet

from recipes.errors import UsageError
from recipes.streaming.geometry import SAMPLE_RATE
from recipes.transcribe.audio import Audio, channel_count, file_cut, on_channel
from recipes.transcribe.channels import EACH, MIX


@dataclass
class EvalSet:
    name: str
    ids: list[str]
    audios: list[np.ndarray]
    texts: list[str]

    def shard(self, rank: int, world_size: int) -> "EvalSet":
        """Every ``world_size``-th utterance from ``rank``: how ranks split an evaluation."""
        return EvalSet(
            self.name, self.ids[rank::world_size], self.audios[rank::world_size], self.texts[rank::world_size]
        )


def content_key(cut) -> tuple[str, float]:
    """A cut's text and duration: what orders cuts (and seeds draws by them) whatever their ids, which data
    preparation derives from the audio's absolute path, so that a checkout at another path draws the same."""
    return " ".join(s.text or "" for s in cut.supervisions), cut.duration


def in_content_order(cuts) -> list:
    """``cuts`` sorted by :func:`content_key` (ids only break ties): the same order in any checkout."""
    return sorted(cuts, key=lambda c: (*content_key(c), c.id))


def load_eval_set(name: str, cuts_path: str | Path, max_utterances: int | None = None, seed: int = 0) -> EvalSet:
    """Load a prepared Lhotse cut manifest (``cuts.jsonl.gz``) into memory as 16 kHz mono audio; with
    ``max_utterances``, a fixed random subset so every checkpoint is scored on the same utterances."""
    cuts = CutSet.from_file(cuts_path).to_eager()
    if max_utterances is not None and len(cuts) > max_utterances:
        ordered = in_content_order(cuts)
        keep = {ordered[i].id for i in random.Random(seed).sample(range(len(ordered)), max_utterances)}
        cuts = cuts.filter(lambda c: c.id in keep).to_eager()
    ids, audios, texts = [], [], []
    for cut in cuts:
        ids.append(cut.id)
        audios.append(cut.resample(SAMPLE_RATE).load_audio()[0])
        texts.append(" ".join(s.text for s in cut.supervisions))
    return EvalSet(name, ids, audios, texts)


def open_audio_file(path: str | Path, channel: int | str = MIX) -> Audio:
    """A wav/flac/opus/... file heard on ``channel`` (an index, or ``mix``: the channels at the loudest one's level,
    as data preparation down-mixes them), to be read as 16 kHz float32 a block at a time."""
    try:
        return on_channel(file_cut(str(path)), channel)
    except ValueError as err:
        raise UsageError(f"channel={channel}: {err}: give one the file has, mix or each") from None


def channels_of(path: str | Path, channel: int | str) -> list[int | str]:
    """The channels ``channel`` stands for in the file at ``path`` (``each``: all of them, in order)."""
    return list(range(channel_count(file_cut(str(path))))) if channel == EACH else [channel]
