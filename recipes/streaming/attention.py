"""The attention layers' key/value projections kept from chunk to chunk, so each step projects only its new frames."""

from __future__ import annotations

import torch
from nemo.collections.asr.parts.submodules.multi_head_attention import MultiHeadAttention, RelPositionMultiHeadAttention


class ProjectedKeyValues:
    """Key/value projections of the attention caches, kept from chunk to chunk.

    NeMo's cache holds each layer's attention *input* for the last ``left`` frames, so every chunk step projects
    those frames to keys and values again. While this object is active, each attention layer projects only the
    new frames and takes the cached frames' projections from the previous step, sliced exactly as NeMo slices its
    input cache (same frames, same order), so the attention sees the same keys and values. Used as a context
    manager around the streaming loop; ``cached`` is the state of the batch being stepped, which the loop swaps,
    selects from and concatenates as streams come and go (``select``, ``concat``).
    """

    PLAIN = (MultiHeadAttention, RelPositionMultiHeadAttention)  # attention classes whose forward_qkv we know

    def __init__(self, encoder):
        self.layers = [
            layer.self_attn
            for layer in encoder.layers
            if type(layer.self_attn) in self.PLAIN and getattr(layer.self_attn, "cache_drop_size", 0) == 0
        ]
        self.cached: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.positions: dict[tuple, torch.Tensor] = {}  # linear_pos outputs, shared by every stream

    def __enter__(self) -> "ProjectedKeyValues":
        for index, attn in enumerate(self.layers):
            attn.forward_qkv = self._forward_qkv(index, attn)  # shadows the class method on this instance
            if type(attn) is RelPositionMultiHeadAttention:
                attn.linear_pos.forward = self._linear_pos(index, attn.linear_pos)
        return self

    def __exit__(self, *exc) -> None:
        for attn in self.layers:
            attn.__dict__.pop("forward_qkv", None)
            if type(attn) is RelPositionMultiHeadAttention:
                attn.linear_pos.__dict__.pop("forward", None)
        self.cached.clear()
        self.positions.clear()

    def _linear_pos(self, index: int, linear: torch.nn.Linear):
        """``linear_pos`` of the positional embeddings, computed once per layer and embedding slice: NeMo slices
        them from one fixed table (``RelPositionalEncoding.pe``), so the same frames count means the same view."""
        original = type(linear).forward.__get__(linear)

        def forward(pos_emb):
            key = (
                index,
                pos_emb.data_ptr(),
                tuple(pos_emb.shape),
                pos_emb.dtype,
                torch.is_autocast_enabled(pos_emb.device.type),
            )
            if key not in self.positions:
                self.positions[key] = original(pos_emb)
            return self.positions[key]

        return forward

    @staticmethod
    def select(cached: dict, rows: torch.Tensor) -> dict:
        return {i: (k[rows], v[rows]) for i, (k, v) in cached.items()}

    @staticmethod
    def concat(a: dict, b: dict) -> dict:
        return {i: (torch.cat([a[i][0], b[i][0]]), torch.cat([a[i][1], b[i][1]])) for i in a}

    def _forward_qkv(self, index: int, attn):
        original = type(attn).forward_qkv.__get__(attn)

        def forward_qkv(query, key, value):
            new, cached = query.size(1), key.size(1) - query.size(1)
            if cached <= 0 or key is not value:  # not a cache-aware step: NeMo's own projection
                return original(query, key, value)
            n, h, d = query.size(0), attn.h, attn.d_k

            def heads(x):  # (B, T, H * d) -> (B, H, T, d)
                return x.view(n, -1, h, d).transpose(1, 2)

            if index not in self.cached or self.cached[index][0].size(2) != cached:
                self.cached[index] = (heads(attn.linear_k(key[:, :cached])), heads(attn.linear_v(value[:, :cached])))
            old_k, old_v = self.cached[index]
            # Concatenated per head: contiguous as the attention's matmuls want them, with no copy of their own.
            k = torch.cat([old_k, heads(attn.linear_k(query))], dim=2)
            v = torch.cat([old_v, heads(attn.linear_v(query))], dim=2)
            self.cached[index] = (k[:, :, new:], v[:, :, new:])  # NeMo's next input cache: the last `cached` frames
            return heads(attn.linear_q(query)), k, v

        return forward_qkv
