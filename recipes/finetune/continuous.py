"""Continuous speech in training: a share of the training batches glued into longer cuts.

A model trained only on isolated utterances learns that speech stops after one sentence: streamed over a meeting
or a call, it goes quiet after the first utterance (its left context, full of earlier speech, and its prediction
network's state after many words are both new to it). :class:`ContinuousSpeech` is a Lhotse sampler transform
that, for a configurable share of batches, joins the batch's cuts in their sampled order into cuts of up to
``max_duration`` seconds, with a pause drawn from ``gap_s`` between them; the transcripts follow in the same order
(NeMo's Lhotse dataset joins the supervisions' tokens). The batch keeps its utterances, so the audio per batch
grows only by the pauses.

Each batch's draw is seeded by the batch itself, not by a running generator: the same batch is glued the same way
after a resume's fast-forward and in every dataloader worker, and in a checkout at another path (the seed is the first
cut's text and duration, not its id: :func:`recipes.evaluate.sets.content_key`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import IterableDatasetWrapper
from lhotse.dataset.sampling.base import CutSampler

from recipes.evaluate.sets import content_key


def join_cuts(cuts: Sequence[Cut], max_duration: float, gap_s: Sequence[float], rng: random.Random) -> list[Cut]:
    """Consecutive ``cuts`` joined greedily into cuts of at most ``max_duration`` seconds, each pause drawn
    uniformly from ``gap_s`` (silence); a cut that does not fit starts the next one."""
    joined: list[Cut] = []
    for cut in cuts:
        pause = rng.uniform(*gap_s)
        if joined and joined[-1].duration + pause + cut.duration <= max_duration:
            previous = joined[-1]
            joined[-1] = previous.pad(duration=previous.duration + pause, preserve_id=True).append(
                cut, preserve_id="left"
            )
        else:
            joined.append(cut)
    return joined


@dataclass
class ContinuousSpeech:
    """Sampler transform: with probability ``share`` a batch's cuts are joined by :func:`join_cuts`."""

    share: float
    max_duration: float
    gap_s: tuple[float, float]
    seed: int

    def __call__(self, cuts: CutSet) -> CutSet:
        batch = list(cuts)
        if not batch:
            return cuts
        rng = random.Random(f"{self.seed}:{content_key(batch[0])}")
        if rng.random() >= self.share:
            return cuts
        return CutSet.from_cuts(join_cuts(batch, self.max_duration, self.gap_s, rng))


def loader_sampler(loader) -> CutSampler:
    """The Lhotse sampler inside a loader NeMo built: in the dataset wrapper of an iterable (Shar, tarred) loader,
    the loader's own sampler otherwise."""
    sampler = loader.dataset.sampler if isinstance(loader.dataset, IterableDatasetWrapper) else loader.sampler
    if not isinstance(sampler, CutSampler):
        raise TypeError(f"continuous speech needs a Lhotse dataloader (use_lhotse: true), got {type(sampler)}")
    return sampler


def add_continuous_speech(loader, continuous, seed: int) -> None:
    """Make ``continuous.share`` of the batches of NeMo's Lhotse training ``loader`` continuous speech (no-op for
    a share of 0 or no config)."""
    if not continuous or not continuous.share:
        return
    transform = ContinuousSpeech(
        float(continuous.share), float(continuous.max_duration), tuple(continuous.gap_s), int(seed)
    )
    loader_sampler(loader).map(transform)
