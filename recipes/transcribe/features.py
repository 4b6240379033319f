"""Mel features of one recording, computed block by block as the streaming engine reads them.

The engine reads a stream's features only as ``feat[:, start:stop]`` with ``start`` never going back past
the chunk it last read (``ChunkPlan``), and ``feat.size(0/1)``. :class:`BlockFeatures` answers those from a
few seconds of features at a time: a frame of a block equals the frame computed on the whole recording
(same samples under its window, same pre-emphasis), because each block is computed from audio that reaches
:data:`EDGE_FRAMES` frames beyond it on both sides. That holds for a preprocessor without per-utterance
normalisation (``normalize: NA``, what cache-aware streaming models use); with one, the whole recording is
one block. Once the last frame has been read, the block is released.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import SAMPLE_RATE
from recipes.transcribe.audio import BLOCK_SECONDS, Audio

EDGE_FRAMES = 4  # > (n_fft / 2 + 1 pre-emphasis sample) / hop: 257 samples at 512 / 160


class BlockFeatures:
    """A tensor-like (F, frames) view of one recording's mel features for ``StreamingRecognizer.stream``."""

    def __init__(
        self, audio: Audio, recognizer: StreamingRecognizer, progress: Callable[[float], None] = lambda s: None
    ):
        self.audio = audio
        self.recognizer = recognizer
        self.progress = progress
        preprocessor = recognizer.model.cfg.preprocessor
        self.hop = int(round(preprocessor.get("window_stride", 0.01) * SAMPLE_RATE))
        self.bins = int(preprocessor.get("features", 80))
        normalised = str(preprocessor.get("normalize", "NA")) not in ("NA", "None", "none")
        # As many frames as the preprocessor gives the whole recording (its own length rule, e.g. samples // hop).
        length = torch.tensor([audio.num_samples])
        self.num_frames = int(recognizer.model.preprocessor.featurizer.get_seq_len(length)[0])
        self.block = self.num_frames if normalised else max(1, int(BLOCK_SECONDS * SAMPLE_RATE) // self.hop)
        self.device = recognizer.model.device
        self.error: str | None = None
        self._start, self._frames = 0, torch.zeros(self.bins, 0, device=self.device)

    def size(self, dim: int) -> int:
        return (self.bins, self.num_frames)[dim]

    def new_zeros(self, *shape) -> torch.Tensor:
        return torch.zeros(*shape, device=self.device)

    def __getitem__(self, index) -> torch.Tensor:
        rows, frames = index
        start, stop, _ = frames.indices(self.num_frames)
        held = self._frames.size(1)
        if start < self._start or start >= self._start + held:  # nothing held is read again
            self._start, self._frames = start, self._frames[:, :0]
        else:  # frames before the chunk are not read again
            self._frames, self._start = self._frames[:, start - self._start :], start
        while self._start + self._frames.size(1) < stop:
            self._frames = torch.cat([self._frames, self._next_block()], dim=1)
        piece = self._frames[rows, : stop - start]
        if stop == self.num_frames:  # the stream's last chunk: nothing more to hold (a re-read recomputes)
            self._start, self._frames = self.num_frames, self._frames[:, :0]
        return piece

    def _next_block(self) -> torch.Tensor:
        first = self._start + self._frames.size(1)
        last = min(self.num_frames, first + self.block)
        lo = max(0, first - EDGE_FRAMES) * self.hop
        hi = min(self.audio.num_samples, (last + EDGE_FRAMES) * self.hop)
        samples = self._read(lo, hi)
        feats = self.recognizer.features([samples])[0]
        self.progress((last - first) * self.hop / SAMPLE_RATE)
        skip = first - lo // self.hop
        return feats[:, skip : skip + last - first]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo:hi``; after a decoding failure (or audio shorter than its header said), silence, and the
        stream's line will carry the reason instead of a transcript."""
        samples = np.zeros(0, dtype=np.float32)
        if self.error is None:
            try:
                samples = self.audio.read(lo, hi)
            except Exception as err:  # any decoder's failure part way through a file
                self.error = f"audio_undecodable: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            else:
                if len(samples) < hi - lo:
                    self.error = f"audio_undecodable: the audio ends at {(lo + len(samples)) / SAMPLE_RATE:.2f} s"
        return np.pad(samples, (0, hi - lo - len(samples)))


def placeholder(num_samples: int) -> np.ndarray:
    """What ``stream`` takes as the audio of a stream whose features are given: only its length is read."""
    return np.broadcast_to(np.zeros(1, dtype=np.float32), (num_samples,))


def encoder_frame_seconds(model) -> float:
    """Seconds per encoder output frame: the mel hop times the encoder's subsampling."""
    stride = float(model.cfg.preprocessor.get("window_stride", 0.01))
    return stride * int(model.cfg.encoder.get("subsampling_factor", 8))
