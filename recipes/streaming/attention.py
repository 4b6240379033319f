"""The engine's own attention and causal convolution for the cache-aware chunk step (training and offline stay NeMo's).

NeMo's ``cache_aware_stream_step`` runs each conformer layer on the chunk's new frames with caches of the layer's
earlier inputs: its attention concatenates the cached inputs with the new ones and projects all of them to keys and
values again, and its relative-position term multiplies the queries with the projected positional embeddings
broadcast over the batch, which copies that projection once per stream. While :class:`ChunkStep` is active, NeMo
still runs the encoder (subsampling, masks, the layers' feed-forward and normalisation modules), but every layer's
attention and depthwise convolution work on the windows of :mod:`recipes.streaming.windows`:

- the new frames' keys and values, split by head, are written in place into the layer's windows, and the
  attention reads the last ``left + new`` frames as a view (no concatenation, no re-projection of cached frames);
- the positional projection (``linear_pos``) depends only on how many frames are attended: it is computed once
  per layer and chunk size, for the ``frames + new - 1`` relative positions a chunk's queries can see (NeMo
  projects ``2 * frames - 1``), laid out per head; the relative-position term is one product per head over all
  streams, and NeMo's ``rel_shift`` becomes a strided view of it;
- the convolution's last ``kernel - 1`` inputs are a window too.

The arithmetic is NeMo's (the same products, masks, softmax and scaling), so the encoder's outputs equal NeMo's up
to the summation order inside the products; the streams' tokens are those of the offline pass (tested).
"""

from __future__ import annotations

import torch
from nemo.collections.asr.parts.submodules.causal_convs import CausalConv1D
from nemo.collections.asr.parts.submodules.multi_head_attention import MultiHeadAttention, RelPositionMultiHeadAttention
from nemo.utils.cast_utils import avoid_float16_autocast_context

from recipes.streaming.windows import EncoderCaches


def nemo_step(encoder, chunk: torch.Tensor, lengths: torch.Tensor, cache, drop: int):
    """NeMo's own cache-aware step of one chunk: (encoded, encoded lengths, the next ``cache``), where ``cache`` is
    (cache_last_channel, cache_last_time, cache_last_channel_len) as ``encoder.get_initial_cache_state`` gives."""
    encoded, encoded_lengths, *cache = encoder.cache_aware_stream_step(
        processed_signal=chunk,
        processed_signal_length=lengths,
        cache_last_channel=cache[0],
        cache_last_time=cache[1],
        cache_last_channel_len=cache[2],
        keep_all_outputs=False,  # chunked-limited: every chunk's output is final
        drop_extra_pre_encoded=drop,
    )
    return encoded, encoded_lengths, cache


class ChunkStep:
    """One cache-aware chunk step of ``encoder`` for a batch of streams, on the engine's windows.

    Used as a context manager around the streaming loop (it installs the engine's attention and convolution on
    the encoder's layers, and removes them on exit); ``step(caches, chunk, lengths, drop)`` runs one chunk of the
    batch whose windows are ``caches`` (from :meth:`initial_caches`, selected and extended as streams come and go).
    """

    ATTENTION = (MultiHeadAttention, RelPositionMultiHeadAttention)  # exactly these classes: their maths is known

    def __init__(self, encoder):
        unsupported = [
            i
            for i, layer in enumerate(encoder.layers)
            if type(layer.self_attn) not in self.ATTENTION or not isinstance(layer.conv.depthwise_conv, CausalConv1D)
        ]
        if unsupported or encoder.conv_context_size[1] != 0:
            raise NotImplementedError(
                "streaming needs plain or relative-position attention and causal convolutions "
                f"(layers {unsupported}, conv_context_size {list(encoder.conv_context_size)})"
            )
        self.encoder = encoder
        self.caches: EncoderCaches | None = None
        self.positions: dict[tuple, torch.Tensor] = {}  # linear_pos outputs per layer and chunk, (H, d_k, width)

    def initial_caches(self, batch: int) -> EncoderCaches:
        encoder = self.encoder
        return EncoderCaches.initial(
            layers=len(encoder.layers),
            attention_frames=encoder.streaming_cfg.last_channel_cache_size,
            convolution_frames=encoder.conv_context_size[0],
            batch=batch,
            device=next(encoder.parameters()).device,
        )

    def __enter__(self) -> "ChunkStep":
        for index, layer in enumerate(self.encoder.layers):  # shadows the class methods on these instances
            layer.self_attn.forward = self._attention(index, layer.self_attn)
            layer.conv.depthwise_conv.forward = self._convolution(index, layer.conv.depthwise_conv)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.encoder.layers:
            layer.self_attn.__dict__.pop("forward", None)
            layer.conv.depthwise_conv.__dict__.pop("forward", None)
        self.caches = None
        self.positions.clear()

    def __call__(
        self, caches: EncoderCaches, chunk: torch.Tensor, lengths: torch.Tensor, drop: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs (B, D, frames) of one chunk and their lengths; ``caches`` move on by the chunk."""
        self.caches = caches
        layers, batch, width = len(self.encoder.layers), chunk.size(0), self.encoder.d_model
        # NeMo's own caches stay empty: the windows hold what they would (the layers pass them through)
        empty = (chunk.new_empty(layers, batch, 0, width), chunk.new_empty(layers, batch, width, 0), caches.lengths)
        encoded, encoded_lengths, (_, _, caches.lengths) = nemo_step(self.encoder, chunk, lengths, empty, drop)
        return encoded, encoded_lengths

    def _attention(self, index: int, attn: MultiHeadAttention):
        relative = type(attn) is RelPositionMultiHeadAttention

        def forward(query, key, value, mask, pos_emb=None, cache=None):
            # query, key and value are the same tensor: the layer's normalised new frames (B, new, d_model)
            windows = self.caches.layers[index]
            if torch.is_autocast_enabled():  # as NeMo: the attention's inputs in fp32 under CUDA autocast
                query = query.to(torch.float32)
            with avoid_float16_autocast_context():
                n, new = query.shape[:2]
                q = attn.linear_q(query).view(n, new, attn.h, attn.d_k)
                keys = windows.keys.push(attn.linear_k(query).view(n, new, attn.h, attn.d_k).transpose(1, 2))
                values = windows.values.push(attn.linear_v(query).view(n, new, attn.h, attn.d_k).transpose(1, 2))
                if relative:
                    scores = torch.matmul((q + attn.pos_bias_u).transpose(1, 2), keys.transpose(-2, -1))
                    scores = scores + self._position_scores(index, attn, q + attn.pos_bias_v, pos_emb, keys.size(2))
                else:
                    scores = torch.matmul(q.transpose(1, 2), keys.transpose(-2, -1))
                out = attn.forward_attention(values, scores / attn.s_d_k, mask)
            return out, cache

        return forward

    def _position_scores(
        self, index: int, attn: RelPositionMultiHeadAttention, q_v: torch.Tensor, pos_emb: torch.Tensor, frames: int
    ) -> torch.Tensor:
        """NeMo's ``rel_shift(q_v @ linear_pos(pos_emb))`` (B, H, new, frames), as one product per head.

        Query i of the chunk sits at window position ``frames - new + i``; against key j it needs the relative
        position ``frames - new + i - j``, which is row ``j + new - 1 - i`` of ``pos_emb`` (positions run from
        ``frames - 1`` down to ``-(frames - 1)``). So only the first ``frames + new - 1`` rows are used, and the
        shift is a view with a row stride one less than the product's width.
        """
        n, new, heads, d_k = q_v.shape
        width = frames + new - 1
        key = (index, frames, new, pos_emb.dtype, torch.is_autocast_enabled(pos_emb.device.type))
        if key not in self.positions:
            projected = attn.linear_pos(pos_emb[0, :width])  # (width, H * d_k)
            self.positions[key] = projected.view(width, heads, d_k).permute(1, 2, 0).contiguous()
        product = torch.bmm(q_v.permute(2, 0, 1, 3).reshape(heads, n * new, d_k), self.positions[key])
        return product.as_strided(
            (n, heads, new, frames), (new * width, n * new * width, width - 1, 1), product.storage_offset() + new - 1
        )

    def _convolution(self, index: int, conv: CausalConv1D):
        def forward(x, cache=None):
            # the last kernel - 1 inputs and the new ones (B, C, kernel - 1 + new): the causal convolution's input
            window = self.caches.layers[index].convolution.push(x)
            return torch.nn.Conv1d.forward(conv, window), cache

        return forward
