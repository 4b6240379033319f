"""Cache-aware streaming recognition with NeMo's caches, batched across utterances.

Every lookahead is run the way the model is deployed: mel features are cut into chunks of
(right context + 1) encoder frames and pushed through the encoder's ``cache_aware_stream_step`` with the
attention and convolution caches carried from chunk to chunk, and the RNNT decoder state carried with them.
``offline`` runs one full forward with the same chunked-limited masks; for a cache-aware model both must give
identical tokens (``count_token_differences``).

How the engine stays fast without changing a single token:

- continuous batching: streams start longest first and leave the batch after their last chunk (caches and
  decoder state are cut to the streams still running), and freed places are refilled with the next streams,
  each reading its own next chunk, so batches stay full and no compute goes to streams that have ended;
- features are computed one utterance at a time (on CPU several times faster than one padded batch), and can be
  computed once and streamed at every lookahead (``stream(..., features=...)``);
- each attention layer keeps the key and value projections of its cached frames (``_ProjectedKeyValues``):
  NeMo caches the layer inputs and projects all 70 cached frames again at every chunk, which is most of the
  encoder's work at short chunks; and relative-position attention keeps its projection of the positional
  embeddings, which NeMo recomputes at every chunk and every layer although they only change with the
  number of frames attended (on the 0.6B model about 7 GFLOPs per step at 80 ms, whatever the batch);
- on CPU, the matrix products of a chunk step, which have a few rows (streams x chunk frames), run on the
  kernels that are fast for few rows (``_FewRowKernels``);
- greedy RNNT decoding keeps NeMo's batched label-looping state as tensors from chunk to chunk, instead of
  converting it to and from per-utterance ``Hypothesis`` objects and re-detokenising every chunk;
- NeMo's neural-type checks, which run on every module call, are off while streaming, and chunk steps run in
  ``torch.inference_mode`` (nothing they create outlives the call).
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import kaldialign
import numpy as np
import torch
import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.multi_head_attention import (MultiHeadAttention,
                                                                        RelPositionMultiHeadAttention)
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis
from nemo.core.classes.common import typecheck

SAMPLE_RATE = 16000
ENCODER_FRAME_MS = 80  # 10 ms mel hop x 8 subsampling


def lookahead_ms(att_context_size: Sequence[int]) -> int:
    """Chunk duration of a ``[left, right]`` context: (right + 1) encoder frames. With chunked-limited attention
    the right context lies inside the chunk, so this is also the algorithmic latency (chunk + lookahead)."""
    return (att_context_size[1] + 1) * ENCODER_FRAME_MS


@dataclass
class Transcripts:
    """Hypotheses in input order, with the token ids behind them and the compute time of each chunk step.

    Streaming also fills, per utterance and in input order:
    ``compute_seconds``: its share of the compute of the chunk steps it took part in (a step's time divided among
    the streams in it), so that the compute of any subset of the utterances adds up;
    ``first_token_seconds``: when the first token would be on screen, counted from the start of the
    utterance's audio (end of the chunk that produced it + that step's compute), None without tokens;
    ``final_seconds``: compute time between the utterance's last audio arriving and its final transcript.
    Both assume chunks are processed as they arrive (no queueing: true while the real-time factor is < 1).
    """

    texts: list[str]
    tokens: list[list[int]]
    step_seconds: list[float] = field(default_factory=list)
    compute_seconds: list[float] = field(default_factory=list)
    first_token_seconds: list[float | None] = field(default_factory=list)
    final_seconds: list[float] = field(default_factory=list)

    def part(self, start: int, stop: int) -> "Transcripts":
        """The utterances ``start:stop`` (e.g. one set of several streamed together); ``step_seconds`` stay whole."""
        return Transcripts(**{f.name: getattr(self, f.name) if f.name == "step_seconds" else
                              getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)})


@contextmanager
def evaluation_mode(model, att_context_size: Sequence[int]):
    """Eval mode with ``att_context_size`` as the encoder's default; all restored afterwards.

    Also no cross-rank sync of the encoder's position-encoding length: NeMo all-reduces it in every forward once
    torch.distributed is up, and under DDP each rank streams its own share of utterances, with its own number of
    forwards, so the ranks' all-reduces would pair up wrongly and hang (the DDP hang of issue 9)."""
    encoder = model.encoder
    was_training, previous = model.training, list(encoder.att_context_size)
    was_synced = getattr(encoder, "sync_max_audio_length", False)
    model.eval()
    encoder.set_default_att_context_size(list(att_context_size))
    encoder.sync_max_audio_length = False
    try:
        yield
    finally:
        encoder.sync_max_audio_length = was_synced
        encoder.set_default_att_context_size(previous)
        model.train(was_training)


def resync_position_encoding(model) -> None:
    """After each rank evaluated its own share (see :func:`evaluation_mode`), let the ranks agree again on the
    encoder's position-encoding length: DDP broadcasts buffers from rank 0 and needs equal shapes. Every rank
    must call it (one all-reduce); without torch.distributed it does nothing."""
    encoder = model.encoder
    if getattr(encoder, "sync_max_audio_length", False) and torch.distributed.is_initialized():
        encoder.update_max_seq_length(seq_length=encoder.max_audio_length, device=model.device)


@contextmanager
def _no_typechecks():
    """NeMo checks neural types on every module call; that costs more than a tiny model's chunk step."""
    typecheck.set_typecheck_enabled(enabled=False)
    try:
        yield
    finally:
        typecheck.set_typecheck_enabled(enabled=True)


def _first_and_later(value) -> tuple[int, int]:
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
        if cfg.cache_drop_size or _first_and_later(cfg.chunk_size)[1] != _first_and_later(cfg.shift_size)[1]:
            raise NotImplementedError("streaming needs att_context_style=chunked_limited (chunks that do not overlap)")
        plan = cls(chunk=_first_and_later(cfg.chunk_size), shift=_first_and_later(cfg.shift_size),
                   pre_cache=_first_and_later(cfg.pre_encode_cache_size), drop_extra=int(cfg.drop_extra_pre_encoded))
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

    def later_input(self, feats: Sequence[torch.Tensor], frames: Sequence[int], steps: Sequence[int]
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

    def chunk_input(self, feats: torch.Tensor, lengths: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
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


class _ProjectedKeyValues:
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
        self.layers = [layer.self_attn for layer in encoder.layers
                       if type(layer.self_attn) in self.PLAIN and getattr(layer.self_attn, "cache_drop_size", 0) == 0]
        self.cached: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.positions: dict[tuple, torch.Tensor] = {}  # linear_pos outputs, shared by every stream

    def __enter__(self) -> "_ProjectedKeyValues":
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
            key = (index, pos_emb.data_ptr(), tuple(pos_emb.shape), pos_emb.dtype,
                   torch.is_autocast_enabled(pos_emb.device.type))
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


class _FewRowKernels:
    """On CPU, the encoder's matrix products of few rows on the kernels that are fast for them, while streaming.

    A chunk step multiplies every weight by only streams x chunk-frames rows, which should cost about one read of
    the weights. On CPU two kernels are slow at that: oneDNN's 1x1 convolution of a few frames, and MKL's
    ``x @ W.T`` of a few rows, where ``W @ x.T`` is the same products on another kernel. So the pointwise
    convolutions run as matrix products, and products of at most ``MAX_ROWS`` rows as ``W @ x.T``; the arithmetic
    is the same, only the summation order inside a kernel may differ. Measured by
    ``scripts/profile_streaming_step.py`` on the 0.6B architecture, 8 streams at 80 ms, a 2-core AMD EPYC (torch
    2.13, MKL 2024.2, oneDNN 3.12): a step took 737 ms with these kernels and 1,038 ms without. Off on a GPU
    (not measured there).
    """

    MAX_ROWS = 64  # few rows: up to 8 streams of a 560 ms chunk (7 frames); larger products keep MKL's own kernel

    def __init__(self, encoder):
        modules = list(encoder.layers.modules()) if next(encoder.parameters()).device.type == "cpu" else []
        positional = {id(m.linear_pos) for m in modules if isinstance(m, RelPositionMultiHeadAttention)}
        self.linears = [m for m in modules if type(m) is torch.nn.Linear and id(m) not in positional]
        self.pointwise = [m for m in modules if type(m) is torch.nn.Conv1d and m.kernel_size == (1,)
                          and m.stride == (1,) and m.padding == (0,) and m.dilation == (1,) and m.groups == 1]

    def __enter__(self) -> "_FewRowKernels":
        for linear in self.linears:
            linear.forward = self._linear(linear.weight, linear.bias)  # shadows the class method on this instance
        for conv in self.pointwise:
            conv.forward = self._pointwise(conv)
        return self

    def __exit__(self, *exc) -> None:
        for module in self.linears + self.pointwise:
            module.__dict__.pop("forward", None)

    @classmethod
    def _product(cls, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        if rows.size(0) > cls.MAX_ROWS:
            return F.linear(x, weight, bias)
        out = torch.mm(weight, rows.t()) if bias is None else torch.addmm(bias[:, None], weight, rows.t())
        return out.t().reshape(*x.shape[:-1], weight.size(0))

    @classmethod
    def _linear(cls, weight, bias):
        return lambda x: cls._product(x, weight, bias)

    @classmethod
    def _pointwise(cls, conv: torch.nn.Conv1d):
        return lambda x: cls._product(x.transpose(1, 2), conv.weight[:, :, 0], conv.bias).transpose(1, 2)


class _LabelLoopingDecoder:
    """Greedy batched RNNT decoding across chunks with NeMo's label-looping computer, its state kept batched."""

    def __init__(self, model):
        self.computer = model.decoding.decoding.decoding_computer
        self.decoder = model.decoder
        self.state = None

    @staticmethod
    def supports(model) -> bool:
        greedy = getattr(model.decoding, "decoding", None)
        return (getattr(greedy, "decoding_computer", None) is not None
                and getattr(greedy, "_greedy_decode", None) == getattr(greedy, "_greedy_decode_blank_as_pad_loop_labels", 0))

    def __call__(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        hyps, self.state = self.computer(x=encoded.transpose(1, 2), out_len=lengths, prev_batched_state=self.state)
        counts = hyps.current_lengths.tolist()
        rows = hyps.transcript[:, : max(counts, default=0)].tolist()
        return [row[:count] for row, count in zip(rows, counts)]

    def keep(self, n: int) -> None:
        """Keep the state of the first ``n`` streams."""
        if self.state is not None:
            self.select(torch.arange(len(self.state.labels), device=self.state.labels.device) < n)

    def select(self, mask: torch.Tensor) -> None:
        """Keep the state of the streams where ``mask`` is true, in order."""
        s = self.state
        self.state = dataclasses.replace(
            s, predictor_states=self.decoder.mask_select_states(s.predictor_states, mask),
            predictor_outputs=s.predictor_outputs[mask], labels=s.labels[mask], decoded_lengths=s.decoded_lengths[mask],
            fusion_states_list=[f[mask] for f in s.fusion_states_list],
            time_jumps=None if s.time_jumps is None else s.time_jumps[mask])

    def extend(self, other: "_LabelLoopingDecoder") -> None:
        """Append the streams of ``other`` (whose state has been through at least one chunk)."""
        items = self.computer.split_batched_state(self.state) + self.computer.split_batched_state(other.state)
        self.state = self.computer.merge_to_batched_state(items)


class _HypothesisDecoder:
    """Any other decoding strategy, through NeMo's partial hypotheses (what ``conformer_stream_step`` does)."""

    def __init__(self, model):
        self.decoding = model.decoding
        self.hyps = None

    def __call__(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        before = [len(h.y_sequence) for h in self.hyps] if self.hyps else [0] * len(encoded)
        self.hyps = self.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=lengths, return_hypotheses=True, partial_hypotheses=self.hyps)
        return [[int(t) for t in h.y_sequence[b:]] for h, b in zip(self.hyps, before)]

    def select(self, mask: torch.Tensor) -> None:
        self.hyps = [h for h, keep in zip(self.hyps, mask.tolist()) if keep]

    def extend(self, other: "_HypothesisDecoder") -> None:
        self.hyps = self.hyps + other.hyps


@dataclass
class _Step:
    """One chunk step of a batch of streams: per stream, its input index, the tokens the chunk added, the audio
    heard once the chunk is complete, and whether it was the stream's last chunk."""

    ids: list[int]
    new_tokens: list[list[int]]
    heard_seconds: list[float]
    last: list[bool]
    seconds: float


@dataclass
class _Streams:
    """Streams decoded together, with everything they carry from chunk to chunk, in one order."""

    ids: list[int]
    feats: list[torch.Tensor]  # (F, frames) each
    frames: list[int]
    total_steps: list[int]
    next_step: list[int]
    cache: list[torch.Tensor]  # NeMo's [cache_last_channel, cache_last_time, cache_last_channel_len]
    key_values: dict
    decoder: object

    def select(self, keep: list[bool]) -> None:
        rows = torch.tensor(keep, device=self.cache[0].device)
        self.ids, self.feats, self.frames, self.total_steps, self.next_step = (
            [x for x, k in zip(values, keep) if k]
            for values in (self.ids, self.feats, self.frames, self.total_steps, self.next_step))
        self.cache = [self.cache[0][:, rows], self.cache[1][:, rows], self.cache[2][rows]]
        self.key_values = _ProjectedKeyValues.select(self.key_values, rows)
        self.decoder.select(rows)

    def extend(self, other: "_Streams") -> None:
        self.ids, self.feats, self.frames, self.total_steps, self.next_step = (
            mine + theirs for mine, theirs in zip(
                (self.ids, self.feats, self.frames, self.total_steps, self.next_step),
                (other.ids, other.feats, other.frames, other.total_steps, other.next_step)))
        self.cache = [torch.cat([self.cache[0], other.cache[0]], 1), torch.cat([self.cache[1], other.cache[1]], 1),
                      torch.cat([self.cache[2], other.cache[2]])]
        self.key_values = _ProjectedKeyValues.concat(self.key_values, other.key_values)
        self.decoder.extend(other.decoder)

    def drop_finished(self) -> None:
        keep = [step < total for step, total in zip(self.next_step, self.total_steps)]
        if not all(keep):
            self.select(keep)


class StreamingRecognizer:
    """Transcribes lists of 16 kHz waveforms chunk by chunk, up to ``batch_size`` streams at a time.

    Streams start longest first and leave after their last chunk; freed places are refilled with the next streams
    (continuous batching, as a streaming server does), so batches stay full and little compute goes to padding.
    """

    def __init__(self, model, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, audios: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Mel features (F, frames) of each waveform.

        Computed one utterance at a time: the same values as one padded batch (every row is independent), but
        the STFT's intermediates of one utterance stay in cache, where a batch of long utterances is several
        times slower on CPU.
        """
        device, preprocessor = self.model.device, self.model.preprocessor
        was_training = preprocessor.training
        preprocessor.eval()  # no dither, whatever mode the model is in (as in training, between evaluations)
        try:
            feats = []
            for audio in audios:
                signal = torch.as_tensor(audio, device=device, dtype=torch.float32)[None]
                feat, length = preprocessor(input_signal=signal, length=torch.tensor([signal.size(1)], device=device))
                feats.append(feat[0, :, : int(length[0])])
            return feats
        finally:
            preprocessor.train(was_training)

    def _batches(self, audios: Sequence[np.ndarray]) -> Iterator[list[int]]:
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def texts(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        """Token ids to text exactly as NeMo's decoding writes ``Hypothesis.text``."""
        hyps = [Hypothesis(score=0.0, y_sequence=list(t)) for t in tokens]
        return [h.text for h in self.model.decoding.decode_hypothesis(hyps)]

    def stream(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int],
               features: Sequence[torch.Tensor] | None = None) -> Transcripts:
        """Real cache-aware streaming, chunk by chunk; ``features``: ``self.features(audios)``, when already
        computed (they are the same at every lookahead)."""
        n = len(audios)
        result = Transcripts(texts=[""] * n, tokens=[[] for _ in audios], compute_seconds=[0.0] * n,
                             first_token_seconds=[None] * n, final_seconds=[0.0] * n)
        feats = list(features) if features is not None else [None] * n
        with evaluation_mode(self.model, att_context_size), torch.inference_mode(), _no_typechecks():
            for step in self._stream_all(audios, feats, ChunkPlan.of(self.model.encoder)):
                result.step_seconds.append(step.seconds)
                for i in step.ids:
                    result.compute_seconds[i] += step.seconds / len(step.ids)
                for i, new, heard, last in zip(step.ids, step.new_tokens, step.heard_seconds, step.last):
                    if new:
                        if not result.tokens[i]:
                            result.first_token_seconds[i] = heard + step.seconds
                        result.tokens[i].extend(new)
                    if last:
                        result.final_seconds[i] = step.seconds
        result.texts = self.texts(result.tokens)
        return result

    def offline(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int]) -> Transcripts:
        """One full-utterance forward with the same chunked-limited attention masks."""
        result = Transcripts(texts=[""] * len(audios), tokens=[[] for _ in audios])
        with evaluation_mode(self.model, att_context_size), torch.no_grad():
            for batch in self._batches(audios):
                feats, feat_lens = padded(self.features([audios[i] for i in batch]))
                start = time.perf_counter()
                encoded, encoded_lens = self.model.encoder(audio_signal=feats, length=feat_lens)
                hyps = self.model.decoding.rnnt_decoder_predictions_tensor(
                    encoder_output=encoded, encoded_lengths=encoded_lens, return_hypotheses=True)
                result.step_seconds.append(time.perf_counter() - start)
                for i, hyp in zip(batch, hyps):
                    result.tokens[i] = [int(t) for t in hyp.y_sequence]
        result.texts = self.texts(result.tokens)
        return result

    def _hop_seconds(self) -> float:
        return float(self.model.cfg.preprocessor.get("window_stride", 0.01))

    def _new_decoder(self):
        return _LabelLoopingDecoder(self.model) if _LabelLoopingDecoder.supports(self.model) \
            else _HypothesisDecoder(self.model)

    def _stream_all(self, audios: Sequence[np.ndarray], feats: list[torch.Tensor | None], plan: ChunkPlan
                    ) -> Iterator[_Step]:
        """Streams every waveform, longest first, at most ``batch_size`` at a time; yields each chunk step.

        Newly admitted streams take their initial steps together (``ChunkPlan.initial_steps``), then join the
        running batch, where every stream reads its own next chunk; a stream leaves after its last chunk. New
        streams are admitted when a quarter of the places are free (or all remaining streams fit), so that
        admissions come in groups rather than one extra small step per freed place. ``feats[i]`` is None where the
        features of ``audios[i]`` are still to be computed.
        """
        pending = sorted(range(len(audios)), key=lambda i: len(audios[i]), reverse=True)
        running: _Streams | None = None
        wave = max(1, self.batch_size // 4)
        with _ProjectedKeyValues(self.model.encoder) as key_values, _FewRowKernels(self.model.encoder):
            while pending or (running is not None and running.ids):
                free = self.batch_size - (len(running.ids) if running else 0)
                if pending and (not running or not running.ids or free >= min(wave, len(pending))):
                    admitted, pending = pending[:free], pending[free:]
                    newcomers = self._admit(audios, feats, admitted, plan)
                    yield from self._initial_steps(newcomers, plan, key_values)
                    newcomers.drop_finished()
                    if running is None or not running.ids:
                        running = newcomers
                    elif newcomers.ids:
                        running.extend(newcomers)
                    continue
                yield self._later_step(running, plan, key_values)
                running.drop_finished()

    def _admit(self, audios, feats: list[torch.Tensor | None], ids: list[int], plan: ChunkPlan) -> _Streams:
        missing = [i for i in ids if feats[i] is None]
        for i, feat in zip(missing, self.features([audios[i] for i in missing])):
            feats[i] = feat
        mine = [feats[i] for i in ids]
        frames = [f.size(1) for f in mine]
        return _Streams(ids=list(ids), feats=mine, frames=frames,
                        total_steps=[plan.steps(n) for n in frames], next_step=[0] * len(ids),
                        cache=list(self.model.encoder.get_initial_cache_state(batch_size=len(ids))),
                        key_values={}, decoder=self._new_decoder())

    def _run(self, streams: _Streams, chunk, chunk_lens, drop: int, key_values) -> list[list[int]]:
        key_values.cached = streams.key_values
        encoded, encoded_lens, *streams.cache = self.model.encoder.cache_aware_stream_step(
            processed_signal=chunk,
            processed_signal_length=chunk_lens,
            cache_last_channel=streams.cache[0],
            cache_last_time=streams.cache[1],
            cache_last_channel_len=streams.cache[2],
            keep_all_outputs=False,  # chunked-limited: every chunk's output is final
            drop_extra_pre_encoded=drop,
        )
        streams.key_values = key_values.cached
        return streams.decoder(encoded, encoded_lens)

    def _report(self, streams: _Streams, steps: list[int], new_tokens, plan: ChunkPlan, seconds: float) -> _Step:
        hop = self._hop_seconds()
        live = [k < total for k, total in zip(steps, streams.total_steps)]
        pick = lambda values: [v for v, keep in zip(values, live) if keep]  # noqa: E731
        return _Step(ids=pick(streams.ids), new_tokens=pick(new_tokens),
                     heard_seconds=pick([min(plan.end(k), n) * hop for k, n in zip(steps, streams.frames)]),
                     last=pick([k == total - 1 for k, total in zip(steps, streams.total_steps)]), seconds=seconds)

    def _initial_steps(self, streams: _Streams, plan: ChunkPlan, key_values) -> Iterator[_Step]:
        feats, lengths = padded(streams.feats)
        for step in range(plan.initial_steps):
            start = time.perf_counter()
            chunk, chunk_lens, drop = plan.chunk_input(feats, lengths, step)
            new_tokens = self._run(streams, chunk, chunk_lens, drop, key_values)
            streams.next_step = [step + 1] * len(streams.ids)
            yield self._report(streams, [step] * len(streams.ids), new_tokens, plan, time.perf_counter() - start)

    def _later_step(self, streams: _Streams, plan: ChunkPlan, key_values) -> _Step:
        start = time.perf_counter()
        steps = list(streams.next_step)
        chunk, chunk_lens = plan.later_input(streams.feats, streams.frames, steps)
        new_tokens = self._run(streams, chunk, chunk_lens, plan.drop_extra, key_values)
        streams.next_step = [k + 1 for k in steps]
        return self._report(streams, steps, new_tokens, plan, time.perf_counter() - start)

    def timed_partials(self, audio: np.ndarray, att_context_size: Sequence[int]) -> Iterator[tuple[float, str]]:
        """``(seconds of audio heard, hypothesis so far)`` after each chunk of one utterance, as a live
        stream would show it."""
        tokens: list[int] = []
        with evaluation_mode(self.model, att_context_size), torch.inference_mode(), _no_typechecks():
            for step in self._stream_all([audio], [None], ChunkPlan.of(self.model.encoder)):
                if step.ids:
                    tokens.extend(step.new_tokens[0])
                    yield step.heard_seconds[0], self.texts([tokens])[0]

    def partials(self, audio: np.ndarray, att_context_size: Sequence[int]) -> Iterator[str]:
        """The growing hypothesis of one utterance after each chunk, as a live stream would show it."""
        for _, text in self.timed_partials(audio, att_context_size):
            yield text


def padded(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance features (F, frames) as one batch (B, F, T), zero past each length, and the lengths."""
    lengths = torch.tensor([f.size(1) for f in feats], device=feats[0].device)
    batch = feats[0].new_zeros(len(feats), feats[0].size(0), int(lengths.max()))
    for row, feat in enumerate(feats):
        batch[row, :, : feat.size(1)] = feat
    return batch, lengths


def count_token_differences(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> int:
    """Total edit distance between paired token sequences (0 when streaming equals offline exactly)."""
    return sum(kaldialign.edit_distance(list(x), list(y))["total"] for x, y in zip(a, b))
