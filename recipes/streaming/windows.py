"""What a batch of streams carries from chunk to chunk through the encoder, in preallocated windows.

NeMo's cache-aware step carries each layer's attention *input* for the last ``left`` frames and the depthwise
convolution's last ``kernel - 1`` inputs, and builds every step's keys, values and convolution input by
concatenating the new frames to them (then re-projects all cached frames). The engine keeps instead, per layer,
the attention's keys and values split by head and the convolution's inputs, each in a :class:`Window`: a buffer
allocated once per batch, into which a step writes its few new frames in place, and whose last frames are read as
a view. The buffer holds about two windows, so its last frames are moved back to its start once every
``left / chunk`` steps instead of being copied at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TIME = 2  # the time dimension of every window: keys/values (B, H, T, d_k), convolution inputs (B, C, T)


class Window:
    """The last ``keep`` frames of a sequence that grows by a few frames per chunk step, batch first.

    Before the first frame, the window holds ``keep`` frames of zeros: what NeMo's initial caches hold (masked
    for attention, the causal convolution's left padding).
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.buffer: torch.Tensor | None = None
        self.end = 0  # first free frame of the buffer

    def push(self, new: torch.Tensor) -> torch.Tensor:
        """Append ``new`` (frames along dim 2) and return the last ``keep`` + new frames, a view of the buffer."""
        size = new.size(TIME)
        if self.buffer is None:  # only the first window is read before it is written: zeros there, nothing after
            self.buffer = new.new_empty(self._shape(new, 2 * self.keep + size))
            self.buffer.narrow(TIME, 0, self.keep).zero_()
            self.end = self.keep
        elif self.end + size > self.buffer.size(TIME):
            self._rewind(size)
        self.buffer.narrow(TIME, self.end, size).copy_(new)
        self.end += size
        return self.buffer.narrow(TIME, self.end - self.keep - size, self.keep + size)

    def _shape(self, like: torch.Tensor, frames: int) -> list[int]:
        shape = list(like.shape)
        shape[TIME] = frames
        return shape

    def _rewind(self, size: int) -> None:
        """Move the last ``keep`` frames to the start (the buffer grows if it could not take ``size`` then)."""
        kept = self.window()
        if self.buffer.size(TIME) < 2 * self.keep + size:  # a longer chunk than the buffer was made for
            self.buffer = kept.new_empty(self._shape(kept, 2 * self.keep + size))
        self.buffer.narrow(TIME, 0, self.keep).copy_(kept)  # no overlap: kept starts at or after frame keep
        self.end = self.keep

    def window(self) -> torch.Tensor:
        return self.buffer.narrow(TIME, self.end - self.keep, self.keep)

    def select(self, rows: torch.Tensor) -> "Window":
        """The window of the streams where ``rows`` (bool) is true, in a new buffer."""
        return Window.joined([self], rows)

    @staticmethod
    def joined(windows: list["Window"], rows: torch.Tensor | None = None) -> "Window":
        """The windows of several batches one after the other (or of ``rows`` of one), in a new buffer."""
        out = Window(windows[0].keep)
        if all(w.buffer is None for w in windows):  # not stepped yet: nothing carried
            return out
        kept = torch.cat([w.window() for w in windows]) if rows is None else windows[0].window()[rows]
        out.buffer = kept.new_empty(out._shape(kept, windows[0].buffer.size(TIME)))
        out.buffer.narrow(TIME, 0, out.keep).copy_(kept)
        out.end = out.keep
        return out


@dataclass
class LayerWindows:
    keys: Window
    values: Window
    convolution: Window


@dataclass
class EncoderCaches:
    """Everything a batch of streams carries through the encoder: per layer the attention's keys and values and
    the convolution's inputs, and per stream how many of the cached frames are real (NeMo's
    ``cache_last_channel_len``, which masks the rest)."""

    layers: list[LayerWindows]
    lengths: torch.Tensor

    @classmethod
    def initial(
        cls, layers: int, attention_frames: int, convolution_frames: int, batch: int, device
    ) -> "EncoderCaches":
        return cls(
            layers=[
                LayerWindows(Window(attention_frames), Window(attention_frames), Window(convolution_frames))
                for _ in range(layers)
            ],
            lengths=torch.zeros(batch, dtype=torch.int64, device=device),
        )

    def select(self, rows: torch.Tensor) -> "EncoderCaches":
        return EncoderCaches(
            layers=[LayerWindows(*(w.select(rows) for w in _windows(layer))) for layer in self.layers],
            lengths=self.lengths[rows],
        )

    def extended(self, other: "EncoderCaches") -> "EncoderCaches":
        return EncoderCaches(
            layers=[
                LayerWindows(*(Window.joined([a, b]) for a, b in zip(_windows(mine), _windows(theirs))))
                for mine, theirs in zip(self.layers, other.layers)
            ],
            lengths=torch.cat([self.lengths, other.lengths]),
        )


def _windows(layer: LayerWindows) -> tuple[Window, Window, Window]:
    return layer.keys, layer.values, layer.convolution
