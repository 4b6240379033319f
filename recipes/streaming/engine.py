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
- the chunk step's attention and causal convolution are the engine's own (``ChunkStep``): each layer keeps the
  keys and values of its cached frames, split by head, and the convolution's last inputs, in windows allocated
  once per batch and written in place (NeMo caches the layer inputs, projects all 70 cached frames again at
  every chunk and concatenates its caches at every layer); the positional projection is computed once per
  layer and chunk size, and the relative-position term is one product per head for all streams (NeMo's copies
  the projection once per stream);
- on CPU, the matrix products of a chunk step with large weights, which have a few rows (streams x chunk
  frames), run on the kernels that are fast for few rows (``FewRowKernels``);
- greedy RNNT decoding keeps NeMo's batched label-looping state as tensors from chunk to chunk, instead of
  converting it to and from per-utterance ``Hypothesis`` objects and re-detokenising every chunk;
- NeMo's neural-type checks, which run on every module call, are off while streaming, and chunk steps run in
  ``torch.inference_mode`` (nothing they create outlives the call)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import kaldialign
import numpy as np
import torch
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

from recipes.streaming.attention import ChunkStep
from recipes.streaming.decoders import HypothesisDecoder, LabelLoopingDecoder
from recipes.streaming.geometry import ChunkPlan
from recipes.streaming.kernels import FewRowKernels
from recipes.streaming.modes import evaluation_mode, no_typechecks
from recipes.streaming.windows import EncoderCaches


@dataclass
class Transcripts:
    """Hypotheses in input order, with the token ids behind them and the compute time of each chunk step.

    Streaming also fills, per utterance and in input order:
    ``compute_seconds``: its share of the compute of the chunk steps it took part in (a step's time divided among
    the streams in it), so that the compute of any subset of the utterances adds up;
    ``first_token_seconds``: when the first token would be on screen, counted from the start of the
    utterance's audio (end of the chunk that produced it + that step's compute), None without tokens;
    ``final_seconds``: compute time between the utterance's last audio arriving and its final transcript;
    ``token_frames``: the encoder frame each token was emitted at (x the encoder's frame length: its time).
    Both assume chunks are processed as they arrive (no queueing: true while the real-time factor is < 1).
    """

    texts: list[str]
    tokens: list[list[int]]
    step_seconds: list[float] = field(default_factory=list)
    compute_seconds: list[float] = field(default_factory=list)
    first_token_seconds: list[float | None] = field(default_factory=list)
    final_seconds: list[float] = field(default_factory=list)
    token_frames: list[list[int]] = field(default_factory=list)

    def part(self, start: int, stop: int) -> "Transcripts":
        """The utterances ``start:stop`` (e.g. one set of several streamed together); ``step_seconds`` stay whole."""
        return Transcripts(
            **{
                f.name: getattr(self, f.name) if f.name == "step_seconds" else getattr(self, f.name)[start:stop]
                for f in dataclasses.fields(self)
            }
        )


@dataclass
class _Step:
    """One chunk step of a batch of streams: per stream, its input index, the tokens the chunk added, the audio
    heard once the chunk is complete, and whether it was the stream's last chunk."""

    ids: list[int]
    new_tokens: list[list[int]]
    new_frames: list[list[int]]  # the encoder frame of each new token
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
    cache: EncoderCaches
    decoder: object

    def select(self, keep: list[bool]) -> None:
        rows = torch.tensor(keep, device=self.cache.lengths.device)
        self.ids, self.feats, self.frames, self.total_steps, self.next_step = (
            [x for x, k in zip(values, keep) if k]
            for values in (self.ids, self.feats, self.frames, self.total_steps, self.next_step)
        )
        self.cache = self.cache.select(rows)
        self.decoder.select(rows)

    def extend(self, other: "_Streams") -> None:
        self.ids, self.feats, self.frames, self.total_steps, self.next_step = (
            mine + theirs
            for mine, theirs in zip(
                (self.ids, self.feats, self.frames, self.total_steps, self.next_step),
                (other.ids, other.feats, other.frames, other.total_steps, other.next_step),
            )
        )
        self.cache = self.cache.extended(other.cache)
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

    def stream(
        self,
        audios: Sequence[np.ndarray],
        att_context_size: Sequence[int],
        features: Sequence[torch.Tensor] | None = None,
    ) -> Transcripts:
        """Real cache-aware streaming, chunk by chunk; ``features``: ``self.features(audios)``, when already
        computed (they are the same at every lookahead).

        A stream's features may also be any object that answers ``size(0)`` (mel bins), ``size(1)`` (frames) and
        ``[:, start:stop]`` (a tensor): the engine reads them chunk by chunk, forward in time (``start`` never
        goes back past the chunk last read), so features computed block by block keep an hour-long stream in
        the memory of a short one (``recipes.transcribe.features.BlockFeatures``); ``audios[i]`` is then read
        for its length only."""
        n = len(audios)
        result = Transcripts(
            texts=[""] * n,
            tokens=[[] for _ in audios],
            compute_seconds=[0.0] * n,
            first_token_seconds=[None] * n,
            final_seconds=[0.0] * n,
            token_frames=[[] for _ in audios],
        )
        feats = list(features) if features is not None else [None] * n
        with evaluation_mode(self.model, att_context_size), torch.inference_mode(), no_typechecks():
            for step in self._stream_all(audios, feats, ChunkPlan.of(self.model.encoder)):
                result.step_seconds.append(step.seconds)
                for i in step.ids:
                    result.compute_seconds[i] += step.seconds / len(step.ids)
                for i, new, frames, heard, last in zip(
                    step.ids, step.new_tokens, step.new_frames, step.heard_seconds, step.last
                ):
                    result.token_frames[i].extend(frames)
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
                    encoder_output=encoded, encoded_lengths=encoded_lens, return_hypotheses=True
                )
                result.step_seconds.append(time.perf_counter() - start)
                for i, hyp in zip(batch, hyps):
                    result.tokens[i] = [int(t) for t in hyp.y_sequence]
        result.texts = self.texts(result.tokens)
        return result

    def _hop_seconds(self) -> float:
        return float(self.model.cfg.preprocessor.get("window_stride", 0.01))

    def _new_decoder(self):
        return (
            LabelLoopingDecoder(self.model)
            if LabelLoopingDecoder.supports(self.model)
            else HypothesisDecoder(self.model)
        )

    def _stream_all(
        self, audios: Sequence[np.ndarray], feats: list[torch.Tensor | None], plan: ChunkPlan
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
        with ChunkStep(self.model.encoder) as chunk_step, FewRowKernels(self.model.encoder):
            while pending or (running is not None and running.ids):
                free = self.batch_size - (len(running.ids) if running else 0)
                if pending and (not running or not running.ids or free >= min(wave, len(pending))):
                    admitted, pending = pending[:free], pending[free:]
                    newcomers = self._admit(audios, feats, admitted, plan, chunk_step)
                    yield from self._initial_steps(newcomers, plan, chunk_step)
                    newcomers.drop_finished()
                    if running is None or not running.ids:
                        running = newcomers
                    elif newcomers.ids:
                        running.extend(newcomers)
                    continue
                yield self._later_step(running, plan, chunk_step)
                running.drop_finished()

    def _admit(
        self, audios, feats: list[torch.Tensor | None], ids: list[int], plan: ChunkPlan, chunk_step: ChunkStep
    ) -> _Streams:
        missing = [i for i in ids if feats[i] is None]
        for i, feat in zip(missing, self.features([audios[i] for i in missing])):
            feats[i] = feat
        mine = [feats[i] for i in ids]
        frames = [f.size(1) for f in mine]
        return _Streams(
            ids=list(ids),
            feats=mine,
            frames=frames,
            total_steps=[plan.steps(n) for n in frames],
            next_step=[0] * len(ids),
            cache=chunk_step.initial_caches(len(ids)),
            decoder=self._new_decoder(),
        )

    def _run(self, streams: _Streams, chunk, chunk_lens, drop: int, chunk_step: ChunkStep) -> list[list[int]]:
        encoded, encoded_lens = chunk_step(streams.cache, chunk, chunk_lens, drop)
        return streams.decoder(encoded, encoded_lens)

    def _report(self, streams: _Streams, steps: list[int], new_tokens, plan: ChunkPlan, seconds: float) -> _Step:
        hop = self._hop_seconds()
        live = [k < total for k, total in zip(steps, streams.total_steps)]
        pick = lambda values: [v for v, keep in zip(values, live) if keep]  # noqa: E731
        return _Step(
            ids=pick(streams.ids),
            new_tokens=pick(new_tokens),
            new_frames=pick(streams.decoder.token_frames),
            heard_seconds=pick([min(plan.end(k), n) * hop for k, n in zip(steps, streams.frames)]),
            last=pick([k == total - 1 for k, total in zip(steps, streams.total_steps)]),
            seconds=seconds,
        )

    def _initial_steps(self, streams: _Streams, plan: ChunkPlan, chunk_step: ChunkStep) -> Iterator[_Step]:
        # Only the frames the initial steps read: features may be computed block by block as streams advance.
        read = plan.end(plan.initial_steps - 1)
        feats, _ = padded([f[:, :read] for f in streams.feats])
        lengths = torch.tensor(streams.frames, device=feats.device)
        for step in range(plan.initial_steps):
            start = time.perf_counter()
            chunk, chunk_lens, drop = plan.chunk_input(feats, lengths, step)
            new_tokens = self._run(streams, chunk, chunk_lens, drop, chunk_step)
            streams.next_step = [step + 1] * len(streams.ids)
            yield self._report(streams, [step] * len(streams.ids), new_tokens, plan, time.perf_counter() - start)

    def _later_step(self, streams: _Streams, plan: ChunkPlan, chunk_step: ChunkStep) -> _Step:
        start = time.perf_counter()
        steps = list(streams.next_step)
        chunk, chunk_lens = plan.later_input(streams.feats, streams.frames, steps)
        new_tokens = self._run(streams, chunk, chunk_lens, plan.drop_extra, chunk_step)
        streams.next_step = [k + 1 for k in steps]
        return self._report(streams, steps, new_tokens, plan, time.perf_counter() - start)

    def timed_partials(
        self, audio: np.ndarray, att_context_size: Sequence[int], features=None
    ) -> Iterator[tuple[float, str]]:
        """``(seconds of audio heard, hypothesis so far)`` after each chunk of one utterance, as a live
        stream would show it; ``features``: its features, a tensor or computed block by block (see ``stream``)."""
        tokens: list[int] = []
        text = ""
        with evaluation_mode(self.model, att_context_size), torch.inference_mode(), no_typechecks():
            for step in self._stream_all([audio], [features], ChunkPlan.of(self.model.encoder)):
                if step.ids:
                    if step.new_tokens[0]:  # detokenised again only when it grew
                        tokens.extend(step.new_tokens[0])
                        text = self.texts([tokens])[0]
                    yield step.heard_seconds[0], text


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
