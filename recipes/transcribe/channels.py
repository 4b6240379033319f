"""Which channels of a recording are heard, and how several become one: the one rule shared by data preparation
(the audio a model is trained on) and by ``recipes.transcribe`` / ``recipes.evaluate audio=`` (what it hears later).

A down-mix is the mean of the channels at the level of the loudest one. A plain mean halves a call recorded with
one party per channel wherever only one of them speaks (-6 dB against the silent channel); scaling the mean back to
the loudest channel's RMS keeps that speech at its own level, leaves identical channels (dual mono) as they are,
and is bounded by the number of channels (never louder than their sum) and by full scale (no clipping).
"""

from __future__ import annotations

import numpy as np

from recipes.errors import UsageError

MIX, EACH = "mix", "each"


class LevelMeter:
    """Running energy of each channel and of their mean, block by block (a long file is never held whole)."""

    def __init__(self) -> None:
        self.channel_energy: np.ndarray | None = None
        self.mean_energy = 0.0
        self.mean_peak = 0.0

    def add(self, samples: np.ndarray) -> "LevelMeter":
        """``samples``: (channels, samples)."""
        samples = np.asarray(samples, dtype=np.float64)
        energy = (samples**2).sum(axis=1)
        self.channel_energy = energy if self.channel_energy is None else self.channel_energy + energy
        mean = samples.mean(axis=0)
        self.mean_energy += float((mean**2).sum())
        self.mean_peak = max(self.mean_peak, float(np.abs(mean).max(initial=0.0)))
        return self

    def gain(self) -> float:
        """What the mean is multiplied by: the loudest channel's RMS over the mean's, within [1, channels] and
        below full scale."""
        if self.channel_energy is None or self.mean_energy <= 0.0:
            return 1.0
        gain = min(float(np.sqrt(self.channel_energy.max() / self.mean_energy)), len(self.channel_energy))
        if self.mean_peak > 0.0:
            gain = min(gain, 1.0 / self.mean_peak)
        return max(gain, 1.0)


def mix_gain(samples: np.ndarray) -> float:
    """The down-mix gain of a whole recording, ``samples`` (channels, samples)."""
    return LevelMeter().add(samples).gain()


def parse_channel(value, key: str, allow_each: bool = True) -> str | int:
    """``mix``, ``each`` (one transcript per channel) or a channel index (0 = first); a :class:`UsageError` naming
    ``key`` otherwise."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    choices = (MIX, EACH) if allow_each else (MIX,)
    if value in choices:
        return value
    raise UsageError(
        f"{key}={value}: not a channel choice: give {', '.join(choices)} or a channel index (0 = the first channel)"
    )
