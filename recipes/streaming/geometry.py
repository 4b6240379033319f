"""Chunk geometry of a cache-aware encoder: sample rate, frame length, lookahead in ms, and which mel frames each chunk step reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

SAMPLE_RATE = 16000
ENCODER_FRAME_MS = 80  # 10 ms mel hop x 8 subsampling


def lookahead_ms(att_context_size: Sequence[int]) -> int:
    """Chunk duration of a ``[left, right]`` context: (right + 1) encoder frames. With chunked-limited attention
    the right context lies inside the chunk, so this is also the algorithmic latency (chunk + lookahead)."""
    return (att_context_size[1] + 1) * ENCODER_FRAME_MS


def first_and_later(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


@dataclass(frozen=True)
class ChunkPlan:
    """Which mel frames each chunk step of a stream reads, from the encoder's ``streaming_cfg`` (frames of 10 ms).

    Step 0 reads ``chunk[0]`` frames from the start with no pre-encode cache; step k > 0 reads ``chunk[1]``
    frames starting at ``shift[0] + (k - 1) * shift[1]``, preceded by the last ``pre_cache[1]`` frames before
    them (zeros before the start), and drops the extra encoder frames those produce.

    Two details keep every lookahead exactly equal to the offline forward, where NeMo's
    ``CacheAwareStreamingAudioBuffer`` is not:

    - a step that starts before ``pre_cache[1]`` frames exist (step 1 of a [70, 0] model, which starts at frame 1)
      reads the features from the very start and drops the encoder frames already emitted (``early_drop``),
      where NeMo pads the missing history with zero features, which the causal subsampling does not see offline;
    - a stream's last chunk runs however few frames it has (one new mel frame gives one encoder frame, as
      offline), where NeMo stops as soon as the longest stream of a batch has fewer than 8 frames left.
    """

    chunk: tuple[int, int]
    shift: tuple[int, int]
    pre_cache: tuple[int, int]
    drop_extra: int
    early_drop: dict[int, int] = field(default_factory=dict)  # step -> encoder frames already emitted before it

    @classmethod
    def of(cls, encoder) -> "ChunkPlan":
        cfg = encoder.streaming_cfg
        if cfg.cache_drop_size or first_and_later(cfg.chunk_size)[1] != first_and_later(cfg.shift_size)[1]:
            raise NotImplementedError("streaming needs att_context_style=chunked_limited (chunks that do not overlap)")
        plan = cls(
            chunk=first_and_later(cfg.chunk_size),
            shift=first_and_later(cfg.shift_size),
            pre_cache=first_and_later(cfg.pre_encode_cache_size),
            drop_extra=int(cfg.drop_extra_pre_encoded),
        )
        step = 1
        while plan.start(step) < plan.pre_cache[1]:
            frames = plan.start(step)
            dummy = torch.zeros(1, frames, encoder._feat_in, device=next(encoder.parameters()).device)
            _, emitted = encoder.pre_encode(x=dummy, lengths=torch.tensor([frames], device=dummy.device))
            plan.early_drop[step] = int(emitted[0])
            step += 1
        return plan

    def start(self, step: int) -> int:
        return 0 if step == 0 else self.shift[0] + (step - 1) * self.shift[1]

    def end(self, step: int) -> int:
        """First mel frame after the chunk of ``step``: the audio a stream must have received to run it."""
        return self.start(step) + self.chunk[min(step, 1)]

    def steps(self, n_frames: int) -> int:
        """Number of chunk steps a stream of ``n_frames`` mel frames runs."""
        if n_frames <= 0:
            return 0
        return 1 + max(0, -(-(n_frames - self.shift[0]) // self.shift[1]))

    @property
    def initial_steps(self) -> int:
        """Steps that read differently from the rest (step 0, and steps before the pre-encode cache exists): a
        stream takes them with streams that start with it; later steps of any streams can share a batch."""
        return 1 + len(self.early_drop)

    def later_input(
        self, feats: Sequence[torch.Tensor], frames: Sequence[int], steps: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One later step (>= ``initial_steps``) of several streams, each at its own step: the features
        (B, F, pre_cache + chunk), pre-encode cache included, and their lengths."""
        cache, chunk = self.pre_cache[1], self.chunk[1]
        x = feats[0].new_zeros(len(feats), feats[0].size(0), cache + chunk)
        lengths = []
        for row, (feat, n, step) in enumerate(zip(feats, frames, steps)):
            start = self.start(step)
            piece = feat[:, start - cache : start + chunk]
            x[row, :, : piece.size(1)] = piece
            lengths.append(min(max(n - start + cache, 0), cache + chunk))
        return x, torch.tensor(lengths, device=x.device)

    def chunk_input(
        self, feats: torch.Tensor, lengths: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The features of ``step`` for every stream in ``feats`` (B, F, T), pre-encode cache included, their
        lengths, and how many encoder frames to drop after the subsampling."""
        later = min(step, 1)
        start, end = self.start(step), self.start(step) + self.chunk[later]
        if step in self.early_drop:
            x = feats[:, :, :end]
            return x, torch.clamp(lengths, max=x.size(-1)), self.early_drop[step]
        cache = self.pre_cache[later]
        x = feats[:, :, max(start - cache, 0) : end]
        if cache > start:  # only step 0 gets here (pre_cache[0], 0 for causal subsampling)
            x = torch.nn.functional.pad(x, (cache - start, 0))
        return x, torch.clamp(lengths - start + cache, min=0, max=x.size(-1)), self.drop_extra if step else 0
