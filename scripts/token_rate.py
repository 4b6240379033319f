"""Random weights that emit about as many tokens per second of speech as a trained model, for honest benchmarks.

A randomly initialised RNNT joint emits up to ``max_symbols`` tokens at every encoder frame (10 per 80 ms on the
0.6B architecture: about 20x a trained model), so decoding, whose cost grows with the tokens emitted, would be
most of every random-weight figure. :class:`BlankCalibration` raises the joint's blank logit (the bias of its
output layer at the blank index) until the model emits, on the speech it is given, as many tokens as the
reference texts of that speech make with the model's tokenizer: what a trained model would emit there. It is
calibrated on the speech the benchmark streams, at the lookahead it streams, because the encoder's outputs (and so
the rate at a given bias) differ between noise and speech and between lookaheads. The offline pass counts the
tokens: with the same masks it emits exactly the streamed tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import SAMPLE_RATE

TOLERANCE = 0.05  # relative distance from the reference count that ends the search
SEARCH_STEPS = 16
SECONDS = 30.0  # of speech calibrated on: enough tokens for a rate, a few offline passes of the 0.6B


@dataclass
class Calibration:
    bias: float  # added to the blank logit
    tokens: int  # emitted on the calibration speech at that bias
    reference: int  # the reference texts' tokens
    seconds: float  # of calibration speech

    def describe(self) -> str:
        return (
            f"blank logit +{self.bias:.2f}: {self.tokens / self.seconds:.1f} tokens/s on {self.seconds:.0f} s of "
            f"speech (reference texts: {self.reference / self.seconds:.1f} tokens/s)"
        )


class BlankCalibration:
    """The blank logit of ``model``'s joint, offset from its untrained value until the model emits the reference
    texts' number of tokens on the given speech (searching by doubling, then bisecting)."""

    def __init__(self, model, batch_size: int = 8):
        output = [m for m in model.joint.joint_net.modules() if isinstance(m, torch.nn.Linear)][-1]
        self.bias = output.bias.data[model.joint.num_classes_with_blank - 1 :]  # a view: writing it changes the model
        self.untrained = float(self.bias[0])
        self.model = model
        self.recognizer = StreamingRecognizer(model, batch_size)

    def emitted(self, offset: float, audios: Sequence[np.ndarray], att_context_size) -> int:
        self.bias.fill_(self.untrained + offset)
        return sum(map(len, self.recognizer.offline(list(audios), att_context_size).tokens))

    def calibrate(self, audios: Sequence[np.ndarray], texts: Sequence[str], att_context_size) -> Calibration:
        """Leave the model at the offset whose token count is nearest the reference's (within TOLERANCE if the
        search gets there)."""
        reference = sum(len(self.model.tokenizer.text_to_ids(t)) for t in texts)
        offset, low, high = 0.0, None, None  # low: emits too many, high: too few
        tried = {offset: self.emitted(offset, audios, att_context_size)}
        for _ in range(SEARCH_STEPS):
            if abs(tried[offset] - reference) <= TOLERANCE * reference:
                break
            if tried[offset] > reference:
                low = offset
            else:
                high = offset
            if high is None:
                offset = 2 * offset if offset > 0 else 1.0
            elif low is None:
                offset = 2 * offset if offset < 0 else -1.0
            else:
                offset = (low + high) / 2
            tried[offset] = self.emitted(offset, audios, att_context_size)
        offset = min(tried, key=lambda o: abs(tried[o] - reference))
        self.bias.fill_(self.untrained + offset)
        return Calibration(offset, tried[offset], reference, sum(len(a) for a in audios) / SAMPLE_RATE)


def first_seconds(audios: Sequence[np.ndarray], texts: Sequence[str], seconds: float) -> tuple[list, list]:
    """The first utterances (and their texts) that make at least ``seconds`` of speech: what to calibrate on."""
    total, count = 0.0, 0
    while count < len(audios) and total < seconds:
        total += len(audios[count]) / SAMPLE_RATE
        count += 1
    return list(audios[:count]), list(texts[:count])


def speech_of(cut_paths: Sequence, seconds: float) -> tuple[list, list]:
    """The first utterances of the cuts manifests ``cut_paths`` that make at least ``seconds``, with their texts."""
    from lhotse import CutSet

    audios, texts = [], []
    for path in cut_paths:
        for cut in CutSet.from_file(path):
            audios.append(cut.resample(SAMPLE_RATE).load_audio()[0].astype(np.float32))
            texts.append(" ".join(s.text for s in cut.supervisions))
            if sum(len(a) for a in audios) >= seconds * SAMPLE_RATE:
                return audios, texts
    return audios, texts
