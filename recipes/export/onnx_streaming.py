"""Streaming recognition with an ONNX export: this project's own onnxruntime decoder, and sherpa-onnx.

``OnnxStreamingRecognizer`` is the parity check of the export: NeMo's preprocessor for the features (the PyTorch
model's, so the features are the streaming engine's), the exported encoder stepped window by window as sherpa-onnx
steps it (``recipes.export.onnx``) with its three caches, and greedy RNNT (NeMo's rule: up to ``max_symbols``
tokens per encoder frame) on the exported prediction network and joint. Its tokens must equal
``StreamingRecognizer.stream``'s.

``sherpa_transcribe`` runs the same files in ``sherpa_onnx.OnlineRecognizer``, a runtime written elsewhere, with the
export's half-hop lead-in before each stream or without it: its own features (kaldi-native-fbank) and its own
greedy search, so its WER is compared, not its tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
import torch

from recipes.export.onnx import load_manifest
from recipes.streaming.engine import StreamingRecognizer, Transcripts
from recipes.streaming.geometry import SAMPLE_RATE, ChunkPlan, lookahead_ms
from recipes.streaming.modes import evaluation_mode


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_file(onnx_dir: Path, relative: str, int8: bool) -> Path:
    return onnx_dir / (relative.replace(".onnx", ".int8.onnx") if int8 else relative)


@dataclass
class EncoderStep:
    """One chunk step's outputs, as numpy arrays (batch first)."""

    encoded: np.ndarray  # (B, D, T)
    lengths: np.ndarray
    cache: list[np.ndarray]


class OnnxStreamingRecognizer:
    """Streams waveforms through ``<onnx_dir>`` with onnxruntime, ``batch_size`` streams in lockstep; ``model``: the
    PyTorch model the files were exported from (its preprocessor, chunk plan and detokeniser)."""

    def __init__(self, onnx_dir: str | Path, model, batch_size: int = 32, int8: bool = False, threads: int = 1):
        self.dir, self.model, self.batch_size, self.int8, self.threads = (
            Path(onnx_dir),
            model,
            batch_size,
            int8,
            threads,
        )
        self.manifest = load_manifest(self.dir)
        self.decoder = _session(onnx_file(self.dir, self.manifest["decoder"], int8), threads)
        self.joiner = _session(onnx_file(self.dir, self.manifest["joiner"], int8), threads)
        self.max_symbols = int(self.manifest["decoding"]["max_symbols"])
        self.blank = model.decoder.blank_idx
        self._encoders: dict[str, ort.InferenceSession] = {}

    def encoder(self, key: str) -> ort.InferenceSession:
        if key not in self._encoders:
            entry = self.manifest["encoders"][key]
            self._encoders[key] = _session(onnx_file(self.dir, entry["encoder"], self.int8), self.threads)
        return self._encoders[key]

    def release(self, key: str) -> None:
        """Drop the session of lookahead ``key`` (the 0.6B fp32 encoder holds 2.3 GiB)."""
        self._encoders.pop(key, None)

    def initial_cache(self, key: str, batch: int) -> list[np.ndarray]:
        meta = {k: int(v) for k, v in self.manifest["encoders"][key]["metadata"].items() if k.startswith("cache_")}
        return [
            np.zeros(
                (
                    batch,
                    meta["cache_last_channel_dim1"],
                    meta["cache_last_channel_dim2"],
                    meta["cache_last_channel_dim3"],
                ),
                np.float32,
            ),
            np.zeros(
                (batch, meta["cache_last_time_dim1"], meta["cache_last_time_dim2"], meta["cache_last_time_dim3"]),
                np.float32,
            ),
            np.zeros((batch,), np.int64),
        ]

    def window(self, key: str, feats: Sequence[torch.Tensor], step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window ``step`` of every stream (features (F, T) each) and its length, as sherpa-onnx cuts it:
        ``window_size`` frames from ``chunk_shift * step`` into the stream (zeros past its end)."""
        meta = {k: int(self.manifest["encoders"][key]["metadata"][k]) for k in ("window_size", "chunk_shift")}
        size, start = meta["window_size"], meta["chunk_shift"] * step
        x = feats[0].new_zeros(len(feats), feats[0].size(0), size)
        lengths = []
        for row, feat in enumerate(feats):
            piece = feat[:, start : start + size]
            x[row, :, : piece.size(1)] = piece
            lengths.append(piece.size(1))
        return x, torch.tensor(lengths)

    def step(self, key: str, chunk: torch.Tensor, lengths: torch.Tensor, cache: list[np.ndarray]) -> EncoderStep:
        outputs = self.encoder(key).run(
            None,
            {
                "audio_signal": chunk.cpu().numpy().astype(np.float32),
                "length": lengths.cpu().numpy().astype(np.int64),
                "cache_last_channel": cache[0],
                "cache_last_time": cache[1],
                "cache_last_channel_len": cache[2],
            },
        )
        return EncoderStep(outputs[0], outputs[1], list(outputs[2:]))

    def _predict(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        names = [i.name for i in self.decoder.get_inputs()]
        feeds = dict(zip(names, [tokens[:, None].astype(np.int32), np.ones(len(tokens), np.int32), *state]))
        out = self.decoder.run(None, feeds)
        return out[0], list(out[2:])

    def _greedy(self, step: EncoderStep, pred: list, tokens: list[list[int]]) -> None:
        """Greedy RNNT over one chunk's frames for every row; ``pred``: [prediction output, *LSTM state], updated."""
        names = [i.name for i in self.joiner.get_inputs()]
        for t in range(step.encoded.shape[2]):
            frame = np.ascontiguousarray(step.encoded[:, :, t : t + 1])
            emitting = step.lengths > t
            for _ in range(self.max_symbols):
                if not emitting.any():
                    break
                logits = self.joiner.run(None, {names[0]: frame, names[1]: pred[0]})[0][:, 0, 0]
                best = logits.argmax(-1)
                emitting &= best != self.blank
                if not emitting.any():
                    break
                for row in np.flatnonzero(emitting):
                    tokens[row].append(int(best[row]))
                out, state = self._predict(np.where(emitting, best, self.blank), pred[1:])
                for i, new in enumerate([out, *state]):
                    axis = 0 if i == 0 else 1  # prediction output (B, H, 1); LSTM states (layers, B, H)
                    mask = emitting.reshape([-1 if a == axis else 1 for a in range(new.ndim)])
                    pred[i] = np.where(mask, new, pred[i])

    def stream(
        self,
        audios: Sequence[np.ndarray],
        att_context_size: Sequence[int],
        features: Sequence[torch.Tensor] | None = None,
    ) -> Transcripts:
        """Tokens and texts of every waveform at one lookahead, with the compute time of each chunk step."""
        key = f"{lookahead_ms(att_context_size)}ms"
        pytorch = StreamingRecognizer(self.model)
        feats = list(features) if features is not None else pytorch.features(audios)
        result = Transcripts(texts=[], tokens=[[] for _ in audios], compute_seconds=[0.0] * len(audios))
        with evaluation_mode(self.model, att_context_size):
            plan = ChunkPlan.of(self.model.encoder)
        order = sorted(range(len(audios)), key=lambda i: feats[i].size(1), reverse=True)
        for start in range(0, len(order), self.batch_size):
            ids = order[start : start + self.batch_size]
            self._stream_batch(key, plan, [feats[i] for i in ids], [result.tokens[i] for i in ids], result, ids)
        result.texts = pytorch.texts(result.tokens)
        return result

    def _stream_batch(
        self,
        key: str,
        plan: ChunkPlan,
        feats: list[torch.Tensor],
        tokens: list[list[int]],
        result: Transcripts,
        ids: list[int],
    ) -> None:
        total = [plan.steps(f.size(1)) for f in feats]
        cache = self.initial_cache(key, len(feats))
        blank = np.full(len(feats), self.blank)
        zero_state = [
            np.zeros(
                (
                    int(self.manifest["encoders"][key]["metadata"]["pred_rnn_layers"]),
                    len(feats),
                    int(self.manifest["encoders"][key]["metadata"]["pred_hidden"]),
                ),
                np.float32,
            )
        ] * 2
        pred = list(self._predict(blank, zero_state))
        pred = [pred[0], *pred[1]]
        for k in range(max(total)):
            began = time.perf_counter()
            rows = np.array([k < n for n in total])
            chunk, chunk_lens = self.window(key, [feats[i] for i in np.flatnonzero(rows)], k)
            out = self.step(key, chunk, chunk_lens, [c[rows] for c in cache])
            for c, new in zip(cache, out.cache):
                c[rows] = new
            sub_pred = [pred[0][rows], pred[1][:, rows], pred[2][:, rows]]
            self._greedy(out, sub_pred, [tokens[i] for i in np.flatnonzero(rows)])
            pred[0][rows], pred[1][:, rows], pred[2][:, rows] = sub_pred
            seconds = time.perf_counter() - began
            result.step_seconds.append(seconds)
            for i in np.flatnonzero(rows):
                result.compute_seconds[ids[i]] += seconds / rows.sum()


def sherpa_transcribe(
    onnx_dir: str | Path,
    key: str,
    audios: Sequence[np.ndarray],
    int8: bool = False,
    threads: int = 1,
    batch_size: int = 32,
    lead_in: bool = True,
) -> tuple[list[str], float]:
    """Texts of every waveform decoded by ``sherpa_onnx.OnlineRecognizer`` with the encoder of lookahead ``key``,
    and the compute seconds. Each stream starts with the export's lead-in of silence (``lead_in_samples``, unless
    ``lead_in`` is false: a stream as sherpa-onnx's own tools feed it) and ends with two windows of silence, so that
    its last chunk is decoded."""
    import sherpa_onnx

    onnx_dir = Path(onnx_dir)
    manifest = load_manifest(onnx_dir)
    entry = manifest["encoders"][key]
    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(onnx_dir / manifest["tokens"]),
        encoder=str(onnx_file(onnx_dir, entry["encoder"], int8)),
        decoder=str(onnx_file(onnx_dir, manifest["decoder"], int8)),
        joiner=str(onnx_file(onnx_dir, manifest["joiner"], int8)),
        num_threads=threads,
        sample_rate=SAMPLE_RATE,
        feature_dim=int(entry["metadata"]["feat_dim"]),
        decoding_method="greedy_search",
    )
    lead = np.zeros(int(entry["metadata"]["lead_in_samples"]) if lead_in else 0, np.float32)
    tail = np.zeros(int(entry["metadata"]["window_size"]) * SAMPLE_RATE // 100 * 2, np.float32)
    texts, seconds = [], 0.0
    for start in range(0, len(audios), batch_size):
        streams = []
        for audio in audios[start : start + batch_size]:
            stream = recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, lead)
            stream.accept_waveform(SAMPLE_RATE, np.asarray(audio, np.float32))
            stream.accept_waveform(SAMPLE_RATE, tail)
            stream.input_finished()
            streams.append(stream)
        began = time.perf_counter()
        while ready := [s for s in streams if recognizer.is_ready(s)]:
            recognizer.decode_streams(ready)
        seconds += time.perf_counter() - began
        texts += [recognizer.get_result(s).strip() for s in streams]
    return texts, seconds


# sherpa_plain: sherpa-onnx fed as its own tools feed a stream, without the export's lead-in
RUNTIMES = ("pytorch", "onnxruntime", "sherpa", "sherpa_plain", "sherpa_int8")


def compare_runtimes(
    model,
    onnx_dir: str | Path,
    eval_sets,
    lookaheads: Sequence[Sequence[int]] | None = None,
    batch_size: int = 32,
    sherpa: bool = True,
) -> dict:
    """WER (as written) and real-time factor of each runtime on each set and lookahead, and the number of utterances
    whose onnxruntime tokens differ from the PyTorch engine's (0 when the export is exact):
    ``{set: {"<ms>ms": {"pytorch": {"wer", "rtf"}, "onnxruntime": {...}, "sherpa": ..., "sherpa_plain": ...,
    "sherpa_int8": ...,
    "token_mismatches": n, "utterances": n}}}``. RTF: compute seconds of the chunk steps (features excluded for
    PyTorch and onnxruntime, included for sherpa-onnx) over seconds of audio, one thread."""
    from recipes.evaluate.wer import word_error_rates

    lookaheads = [list(la) for la in (lookaheads or model.encoder.att_context_size_all)]
    pytorch = StreamingRecognizer(model, batch_size)
    ours = OnnxStreamingRecognizer(onnx_dir, model, batch_size)
    int8 = bool(load_manifest(onnx_dir).get("int8"))
    features = {es.name: pytorch.features(es.audios) for es in eval_sets}
    report: dict = {es.name: {} for es in eval_sets}
    for la in lookaheads:  # one encoder in memory at a time: ours, then sherpa-onnx's fp32, then its int8
        key = f"{lookahead_ms(la)}ms"
        for es in eval_sets:
            ref, got = pytorch.stream(es.audios, la, features[es.name]), ours.stream(es.audios, la, features[es.name])
            report[es.name][key] = {
                "utterances": len(es.audios),
                "token_mismatches": sum(a != b for a, b in zip(ref.tokens, got.tokens)),
                "pytorch": (ref.texts, sum(ref.compute_seconds)),
                "onnxruntime": (got.texts, sum(got.compute_seconds)),
            }
        ours.release(key)
        for variant in ("sherpa", "sherpa_plain", "sherpa_int8") if sherpa else ():
            if variant == "sherpa_int8" and not int8:
                continue
            for es in eval_sets:
                report[es.name][key][variant] = sherpa_transcribe(
                    onnx_dir,
                    key,
                    es.audios,
                    int8=variant == "sherpa_int8",
                    batch_size=batch_size,
                    lead_in=variant != "sherpa_plain",
                )
    for es in eval_sets:
        audio_seconds = sum(len(a) for a in es.audios) / SAMPLE_RATE
        for entry in report[es.name].values():
            for runtime in RUNTIMES:
                if runtime in entry:
                    texts, seconds = entry[runtime]
                    entry[runtime] = {"wer": word_error_rates(es.texts, texts)["wer"], "rtf": seconds / audio_seconds}
    return report


def runtime_table(report: dict) -> str:
    """Markdown: one row per set and lookahead, WER (%) and RTF of each runtime, and the token mismatches."""
    present = [r for r in RUNTIMES if any(r in e for by in report.values() for e in by.values())]
    lines = [
        "| set | lookahead | utterances | "
        + " | ".join(f"{r} WER / RTF" for r in present)
        + " | onnxruntime tokens != PyTorch |",
        "|---|---:|---:|" + "---:|" * (len(present) + 1),
    ]
    for name, by_lookahead in report.items():
        for key, e in by_lookahead.items():
            cells = [f"{100 * e[r]['wer']:.1f} / {e[r]['rtf']:.3f}" if r in e else "-" for r in present]
            lines.append(
                f"| {name} | {key} | {e['utterances']} | " + " | ".join(cells) + f" | {e['token_mismatches']} |"
            )
    return "\n".join(lines)
