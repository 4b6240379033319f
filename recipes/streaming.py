"""Cache-aware streaming recognition with NeMo's caches, batched across utterances.

Every lookahead is run the way the model is deployed: mel features are cut into chunks of
(right context + 1) encoder frames and pushed through the encoder's ``cache_aware_stream_step`` with the
attention and convolution caches carried from chunk to chunk, and the RNNT decoder state carried with them.
``offline`` runs one full forward with the same chunked-limited masks; for a cache-aware model both must give
identical tokens (``count_token_differences``).

How the engine stays fast without changing a single token:

- utterances are sorted by length and batched, so streams of similar length share a batch;
- a batch shrinks as its shorter streams end (caches and decoder state are cut to the streams still
  running), so no compute goes to streams that have nothing left to say;
- each attention layer keeps the key and value projections of its cached frames (``_ProjectedKeyValues``):
  NeMo caches the layer inputs and projects all 70 cached frames again at every chunk, which is most of the
  encoder's work at short chunks;
- greedy RNNT decoding keeps NeMo's batched label-looping state as tensors from chunk to chunk, instead of
  converting it to and from per-utterance ``Hypothesis`` objects and re-detokenising every chunk;
- NeMo's neural-type checks, which run on every module call, are off while streaming.
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
    ``first_token_seconds``: when the first token would be on screen, counted from the start of the
    utterance's audio (end of the chunk that produced it + that step's compute), None without tokens;
    ``final_seconds``: compute time between the utterance's last audio arriving and its final transcript.
    Both assume chunks are processed as they arrive (no queueing: true while the real-time factor is < 1).
    """

    texts: list[str]
    tokens: list[list[int]]
    step_seconds: list[float] = field(default_factory=list)
    first_token_seconds: list[float | None] = field(default_factory=list)
    final_seconds: list[float] = field(default_factory=list)


@contextmanager
def evaluation_mode(model, att_context_size: Sequence[int]):
    """Eval mode with ``att_context_size`` as the encoder's default; both restored afterwards."""
    encoder = model.encoder
    was_training, previous = model.training, list(encoder.att_context_size)
    model.eval()
    encoder.set_default_att_context_size(list(att_context_size))
    try:
        yield
    finally:
        encoder.set_default_att_context_size(previous)
        model.train(was_training)


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
    manager around one batch; ``keep(n)`` follows the batch when it shrinks.
    """

    PLAIN = (MultiHeadAttention, RelPositionMultiHeadAttention)  # attention classes whose forward_qkv we know

    def __init__(self, encoder):
        self.layers = [layer.self_attn for layer in encoder.layers
                       if type(layer.self_attn) in self.PLAIN and getattr(layer.self_attn, "cache_drop_size", 0) == 0]
        self.cached: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __enter__(self) -> "_ProjectedKeyValues":
        for index, attn in enumerate(self.layers):
            attn.forward_qkv = self._forward_qkv(index, attn)  # shadows the class method on this instance
        return self

    def __exit__(self, *exc) -> None:
        for attn in self.layers:
            attn.__dict__.pop("forward_qkv", None)
        self.cached.clear()

    def keep(self, n: int) -> None:
        self.cached = {i: (k[:n], v[:n]) for i, (k, v) in self.cached.items()}

    def _forward_qkv(self, index: int, attn):
        original = type(attn).forward_qkv.__get__(attn)

        def forward_qkv(query, key, value):
            new, cached = query.size(1), key.size(1) - query.size(1)
            if cached <= 0 or key is not value:  # not a cache-aware step: NeMo's own projection
                return original(query, key, value)
            if index not in self.cached or self.cached[index][0].size(1) != cached:
                self.cached[index] = (attn.linear_k(key[:, :cached]), attn.linear_v(value[:, :cached]))
            old_k, old_v = self.cached[index]
            k = torch.cat([old_k, attn.linear_k(query)], dim=1)
            v = torch.cat([old_v, attn.linear_v(query)], dim=1)
            self.cached[index] = (k[:, new:], v[:, new:])  # NeMo's next input cache: the last `cached` frames
            n, h, d = query.size(0), attn.h, attn.d_k
            q = attn.linear_q(query).view(n, -1, h, d).transpose(1, 2)
            return q, k.view(n, -1, h, d).transpose(1, 2), v.view(n, -1, h, d).transpose(1, 2)

        return forward_qkv


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
        if self.state is None:
            return
        s = self.state
        mask = torch.arange(len(s.labels), device=s.labels.device) < n
        self.state = dataclasses.replace(
            s, predictor_states=self.decoder.mask_select_states(s.predictor_states, mask),
            predictor_outputs=s.predictor_outputs[mask], labels=s.labels[mask], decoded_lengths=s.decoded_lengths[mask],
            fusion_states_list=[f[mask] for f in s.fusion_states_list],
            time_jumps=None if s.time_jumps is None else s.time_jumps[mask])


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

    def keep(self, n: int) -> None:
        if self.hyps is not None:
            self.hyps = self.hyps[:n]


@dataclass
class _Step:
    index: int
    active: int                  # streams 0..active-1 of the batch took part
    new_tokens: list[list[int]]  # per active stream
    seconds: float


class StreamingRecognizer:
    """Transcribes lists of 16 kHz waveforms, ``batch_size`` utterances at a time, longest first so that
    utterances of similar length share a batch and little compute goes to padding."""

    def __init__(self, model, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel features (B, F, T) of each waveform and their lengths, zero past each length.

        Computed one utterance at a time: the same values as one padded batch (every row is independent), but
        the STFT's intermediates of one utterance stay in cache, where a batch of long utterances is several
        times slower on CPU.
        """
        device = self.model.device
        feats = []
        for audio in audios:
            signal = torch.as_tensor(audio, device=device, dtype=torch.float32)[None]
            feat, length = self.model.preprocessor(input_signal=signal, length=torch.tensor([signal.size(1)], device=device))
            feats.append(feat[0, :, : int(length[0])])
        lengths = torch.tensor([f.size(1) for f in feats], device=device)
        batch = feats[0].new_zeros(len(feats), feats[0].size(0), int(lengths.max()))
        for i, feat in enumerate(feats):
            batch[i, :, : feat.size(1)] = feat
        return batch, lengths

    def _batches(self, audios: Sequence[np.ndarray]) -> Iterator[list[int]]:
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def texts(self, tokens: Sequence[Sequence[int]]) -> list[str]:
        """Token ids to text exactly as NeMo's decoding writes ``Hypothesis.text``."""
        hyps = [Hypothesis(score=0.0, y_sequence=list(t)) for t in tokens]
        return [h.text for h in self.model.decoding.decode_hypothesis(hyps)]

    def stream(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int]) -> Transcripts:
        """Real cache-aware streaming, chunk by chunk."""
        n = len(audios)
        result = Transcripts(texts=[""] * n, tokens=[[] for _ in audios], first_token_seconds=[None] * n,
                             final_seconds=[0.0] * n)
        hop = self._hop_seconds()
        with evaluation_mode(self.model, att_context_size), torch.no_grad(), _no_typechecks():
            plan = ChunkPlan.of(self.model.encoder)
            for batch in self._batches(audios):
                feats, lengths = self.features([audios[i] for i in batch])
                frames = lengths.tolist()
                last_step = [plan.steps(f) - 1 for f in frames]
                for step in self._steps(feats, lengths, plan):
                    result.step_seconds.append(step.seconds)
                    end = plan.end(step.index)
                    for j, new in enumerate(step.new_tokens):
                        i = batch[j]
                        if new:
                            if not result.tokens[i]:
                                result.first_token_seconds[i] = min(end, frames[j]) * hop + step.seconds
                            result.tokens[i].extend(new)
                        if last_step[j] == step.index:
                            result.final_seconds[i] = step.seconds
        result.texts = self.texts(result.tokens)
        return result

    def offline(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int]) -> Transcripts:
        """One full-utterance forward with the same chunked-limited attention masks."""
        result = Transcripts(texts=[""] * len(audios), tokens=[[] for _ in audios])
        with evaluation_mode(self.model, att_context_size), torch.no_grad():
            for batch in self._batches(audios):
                feats, feat_lens = self.features([audios[i] for i in batch])
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

    def _steps(self, feats: torch.Tensor, lengths: torch.Tensor, plan: ChunkPlan) -> Iterator[_Step]:
        """Streams a batch sorted longest first; yields the new tokens of every stream still running after each
        chunk step. Streams leave the batch after their last chunk."""
        encoder = self.model.encoder
        steps = [plan.steps(n) for n in lengths.tolist()]
        total = max(steps, default=0)
        cache_channel, cache_time, cache_channel_len = encoder.get_initial_cache_state(batch_size=len(steps))
        decoder = _LabelLoopingDecoder(self.model) if _LabelLoopingDecoder.supports(self.model) \
            else _HypothesisDecoder(self.model)
        active = len(steps)
        with _ProjectedKeyValues(encoder) as key_values:
            for index in range(total):
                start = time.perf_counter()
                running = sum(1 for s in steps[:active] if s > index)
                if running < active:
                    active = running
                    cache_channel, cache_time = cache_channel[:, :active], cache_time[:, :active]
                    cache_channel_len = cache_channel_len[:active]
                    decoder.keep(active)
                    key_values.keep(active)
                chunk, chunk_lens, drop = plan.chunk_input(feats[:active], lengths[:active], index)
                encoded, encoded_lens, cache_channel, cache_time, cache_channel_len = encoder.cache_aware_stream_step(
                    processed_signal=chunk,
                    processed_signal_length=chunk_lens,
                    cache_last_channel=cache_channel,
                    cache_last_time=cache_time,
                    cache_last_channel_len=cache_channel_len,
                    keep_all_outputs=index == total - 1,
                    drop_extra_pre_encoded=drop,
                )
                new_tokens = decoder(encoded, encoded_lens)
                yield _Step(index, active, new_tokens, time.perf_counter() - start)

    def timed_partials(self, audio: np.ndarray, att_context_size: Sequence[int]) -> Iterator[tuple[float, str]]:
        """``(seconds of audio heard, hypothesis so far)`` after each chunk of one utterance, as a live
        stream would show it."""
        hop = self._hop_seconds()
        tokens: list[int] = []
        with evaluation_mode(self.model, att_context_size), torch.no_grad(), _no_typechecks():
            plan = ChunkPlan.of(self.model.encoder)
            feats, lengths = self.features([audio])
            for step in self._steps(feats, lengths, plan):
                tokens.extend(step.new_tokens[0])
                heard = min(plan.end(step.index), int(lengths[0])) * hop
                yield heard, self.texts([tokens])[0]

    def partials(self, audio: np.ndarray, att_context_size: Sequence[int]) -> Iterator[str]:
        """The growing hypothesis of one utterance after each chunk, as a live stream would show it."""
        for _, text in self.timed_partials(audio, att_context_size):
            yield text


def count_token_differences(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> int:
    """Total edit distance between paired token sequences (0 when streaming equals offline exactly)."""
    return sum(kaldialign.edit_distance(list(x), list(y))["total"] for x, y in zip(a, b))
