"""Cache-aware streaming recognition with NeMo's caches, batched across utterances.

Every lookahead is run the way the model is deployed: mel features are cut into chunks of
(right context + 1) encoder frames and pushed through ``conformer_stream_step`` with the attention and
convolution caches carried from chunk to chunk. ``offline`` runs one full forward with the same
chunked-limited masks; for a cache-aware model both must give identical tokens.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import kaldialign
import numpy as np
import torch
from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

ENCODER_FRAME_MS = 80  # 10 ms mel hop x 8 subsampling


def lookahead_ms(att_context_size: Sequence[int]) -> int:
    """Chunk duration of a ``[left, right]`` context: (right + 1) encoder frames."""
    return (att_context_size[1] + 1) * ENCODER_FRAME_MS


@dataclass
class Transcripts:
    """Hypotheses in input order, with the token ids behind them and the compute time of each chunk step."""

    texts: list[str]
    tokens: list[list[int]]
    step_seconds: list[float] = field(default_factory=list)


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


class StreamingRecognizer:
    """Transcribes lists of 16 kHz waveforms, ``batch_size`` utterances at a time, longest first so that
    utterances of similar length share a batch and little compute goes to padding."""

    def __init__(self, model, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, audios: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.model.device
        lengths = torch.tensor([len(a) for a in audios], device=device)
        signal = torch.zeros(len(audios), int(lengths.max()), device=device)
        for i, audio in enumerate(audios):
            signal[i, : len(audio)] = torch.as_tensor(audio, device=device)
        return self.model.preprocessor(input_signal=signal, length=lengths)

    def _batches(self, audios: Sequence[np.ndarray]) -> Iterator[list[int]]:
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _run(self, audios, att_context_size, decode_batch) -> Transcripts:
        result = Transcripts(texts=[""] * len(audios), tokens=[[] for _ in audios])
        with evaluation_mode(self.model, att_context_size), torch.no_grad():
            for batch in self._batches(audios):
                hyps = decode_batch([audios[i] for i in batch], result.step_seconds)
                for i, hyp in zip(batch, hyps):
                    result.texts[i] = hyp.text
                    result.tokens[i] = [int(t) for t in hyp.y_sequence]
        return result

    def stream(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int]) -> Transcripts:
        """Real cache-aware streaming, chunk by chunk."""
        return self._run(audios, att_context_size, self._stream_batch)

    def offline(self, audios: Sequence[np.ndarray], att_context_size: Sequence[int]) -> Transcripts:
        """One full-utterance forward with the same chunked-limited attention masks."""
        return self._run(audios, att_context_size, self._offline_batch)

    def _offline_batch(self, audios, step_seconds):
        feats, feat_lens = self.features(audios)
        start = time.perf_counter()
        encoded, encoded_lens = self.model.encoder(audio_signal=feats, length=feat_lens)
        hyps = self.model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=encoded_lens, return_hypotheses=True
        )
        step_seconds.append(time.perf_counter() - start)
        return hyps

    def _stream_batch(self, audios, step_seconds):
        hyps = None
        for hyps, seconds in self._chunk_steps(audios):
            step_seconds.append(seconds)
        return hyps

    def _chunk_steps(self, audios) -> Iterator[tuple[list, float]]:
        """Yields the running hypotheses after each chunk, with the compute time of that step."""
        model, encoder = self.model, self.model.encoder
        feats, feat_lens = self.features(audios)
        buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
        for feat, length in zip(feats, feat_lens):
            buffer.append_processed_signal(feat[None, :, : int(length)])
        cache_channel, cache_time, cache_channel_len = encoder.get_initial_cache_state(batch_size=len(audios))
        hyps = None
        for step, (chunk, chunk_lens) in enumerate(buffer):
            start = time.perf_counter()
            _, _, cache_channel, cache_time, cache_channel_len, hyps = model.conformer_stream_step(
                processed_signal=chunk,
                processed_signal_length=chunk_lens,
                cache_last_channel=cache_channel,
                cache_last_time=cache_time,
                cache_last_channel_len=cache_channel_len,
                keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hyps,
                drop_extra_pre_encoded=0 if step == 0 else encoder.streaming_cfg.drop_extra_pre_encoded,
                return_transcription=True,
            )
            yield hyps, time.perf_counter() - start

    def partials(self, audio: np.ndarray, att_context_size: Sequence[int]) -> Iterator[str]:
        """The growing hypothesis of one utterance after each chunk, as a live stream would show it."""
        with evaluation_mode(self.model, att_context_size), torch.no_grad():
            for hyps, _ in self._chunk_steps([audio]):
                yield hyps[0].text


def count_token_differences(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> int:
    """Total edit distance between paired token sequences (0 when streaming equals offline exactly)."""
    return sum(kaldialign.edit_distance(list(x), list(y))["total"] for x, y in zip(a, b))
