"""What is transcribed: one recording, or a segment of one, at 16 kHz mono, read a block at a time.

An :class:`Audio` is a Lhotse cut (a file, a manifest row's segment, or a prepared cut) with the channel choice
applied: one channel, or a down-mix of all of them (``recipes.transcribe.channels``). Blocks are read with a
margin on either side that is then cut off, so that resampling a block gives the samples resampling the whole
recording would: an hour-long file never needs to be in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lhotse import MonoCut, MultiCut, Recording
from lhotse.cut import Cut

from recipes.streaming.geometry import SAMPLE_RATE
from recipes.transcribe.channels import MIX, LevelMeter, mix_gain

BLOCK_SECONDS = 30.0  # audio read (and features computed) at a time; a shorter recording is read whole
MARGIN_SAMPLES = 4000  # 0.25 s each side of a block: far wider than a resampling filter's reach


@dataclass
class Audio:
    """A recording (or segment) to transcribe, as a 16 kHz cut, and the channel it is heard on."""

    cut: Cut  # MonoCut: one channel; MultiCut: every channel, down-mixed with ``gain``
    channel: int | str  # the channel index, or "mix"
    gain: float | None = None  # the down-mix gain, measured on the whole recording (None: not measured yet)

    @property
    def num_samples(self) -> int:
        return self.cut.num_samples

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (16 kHz, mono, float32)."""
        if start == 0 and stop >= self.num_samples:
            samples = np.atleast_2d(self.cut.load_audio())
            if self.gain is None and samples.shape[0] > 1:
                self.gain = mix_gain(samples)
            return self._mono(samples)[:stop]
        lo, hi = max(0, start - MARGIN_SAMPLES), min(self.num_samples, stop + MARGIN_SAMPLES)
        piece = self.cut.truncate(offset=lo / SAMPLE_RATE, duration=(hi - lo) / SAMPLE_RATE, preserve_id=True)
        return self._mono(piece.load_audio())[start - lo : stop - lo]

    def _mono(self, samples: np.ndarray) -> np.ndarray:
        samples = np.atleast_2d(samples).astype(np.float32, copy=False)
        if samples.shape[0] == 1:
            return samples[0]
        if self.gain is None:
            self.gain = self._measure_gain()
        return samples.mean(axis=0) * np.float32(self.gain)

    def _measure_gain(self) -> float:
        """The down-mix gain of the whole recording, block by block (one extra pass over a long file)."""
        meter = LevelMeter()
        step = int(BLOCK_SECONDS * SAMPLE_RATE)
        for start in range(0, self.num_samples, step):
            duration = min(step, self.num_samples - start) / SAMPLE_RATE
            meter.add(self.cut.truncate(offset=start / SAMPLE_RATE, duration=duration, preserve_id=True).load_audio())
        return meter.gain()


def channel_count(cut: Cut) -> int:
    return len(cut.channel) if isinstance(cut.channel, list) else 1


def on_channel(cut: Cut, channel: int | str) -> Audio:
    """``cut`` heard on ``channel`` (an index, or "mix"), at 16 kHz. Raises ValueError for a channel it lacks."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    if not isinstance(cut, MultiCut):  # one channel (a mono file, or a cut already on one)
        if channel not in (MIX, 0):
            raise ValueError(f"channel {channel}: the audio has 1 channel")
        return Audio(cut, 0 if isinstance(cut, MonoCut) else MIX)
    if channel == MIX:
        return Audio(cut, MIX)
    if channel not in cut.channel:
        raise ValueError(f"channel {channel}: the audio has {len(cut.channel)} channels (0-{len(cut.channel) - 1})")
    return Audio(
        MonoCut(id=cut.id, start=cut.start, duration=cut.duration, channel=channel, recording=cut.recording), channel
    )


def file_cut(path: str, offset: float = 0.0, duration: float | None = None) -> Cut:
    """A file (or the segment ``offset``, ``duration`` of it) as a Lhotse cut; its header only is read."""
    cut = Recording.from_file(path).to_cut()
    if offset or duration is not None:
        if offset >= cut.duration:
            raise ValueError(f"offset {offset:.2f}s is past the end of the audio ({cut.duration:.2f}s)")
        cut = cut.truncate(offset=offset, duration=duration, preserve_id=True)
    return cut
