"""Streaming WER of a model on dev sets, per lookahead: the numbers a user deploys by."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jiwer
import numpy as np
from lhotse import CutSet, Recording
from whisper_normalizer.english import EnglishTextNormalizer

from recipes.streaming import SAMPLE_RATE, StreamingRecognizer, Transcripts, count_token_differences, lookahead_ms

_normalizer = EnglishTextNormalizer()


@dataclass
class EvalSet:
    name: str
    ids: list[str]
    audios: list[np.ndarray]
    texts: list[str]

    def shard(self, rank: int, world_size: int) -> "EvalSet":
        """Every ``world_size``-th utterance from ``rank``: how ranks split an evaluation."""
        return EvalSet(self.name, self.ids[rank::world_size], self.audios[rank::world_size],
                       self.texts[rank::world_size])


def load_eval_set(name: str, cuts_path: str | Path, max_utterances: int | None = None, seed: int = 0) -> EvalSet:
    """Load a prepared Lhotse cut manifest (``cuts.jsonl.gz``) into memory as 16 kHz mono audio; with
    ``max_utterances``, a fixed random subset so every checkpoint is scored on the same utterances."""
    cuts = CutSet.from_file(cuts_path).to_eager()
    if max_utterances is not None and len(cuts) > max_utterances:
        keep = set(random.Random(seed).sample(sorted(cuts.ids), max_utterances))
        cuts = cuts.filter(lambda c: c.id in keep).to_eager()
    ids, audios, texts = [], [], []
    for cut in cuts:
        ids.append(cut.id)
        audios.append(cut.resample(SAMPLE_RATE).load_audio()[0])
        texts.append(" ".join(s.text for s in cut.supervisions))
    return EvalSet(name, ids, audios, texts)


def word_error_rates(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """WER as written (case and punctuation count, as Nemotron writes them) and after English normalisation."""
    norm_refs = [_normalizer(r) for r in refs]
    norm_hyps = [_normalizer(h) for h in hyps]
    # jiwer refuses empty references; an utterance that normalises to nothing carries no words to score.
    scored = [i for i, r in enumerate(norm_refs) if r.strip()]
    return {
        "wer": jiwer.wer([refs[i] for i in scored], [hyps[i] for i in scored]),
        "wer_normalized": jiwer.wer([norm_refs[i] for i in scored], [norm_hyps[i] for i in scored]),
    }


def word_error_counts(refs: Sequence[str], hyps: Sequence[str]) -> tuple[int, int]:
    """(word errors, reference words) as written, so WERs of several shards add up to the WER of their union."""
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        return 0, 0
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def entry_of(eval_set: EvalSet, att_context_size: Sequence[int], streamed: Transcripts,
             offline: Transcripts | None = None) -> dict:
    """One set at one lookahead: per-utterance hypotheses and latencies, and the compute they took.

    With the ``offline`` pass (same chunked-limited masks), also per utterance the number of tokens by which
    streaming differs from it (``offline_diff``; 0 for an exact cache-aware engine).
    """
    seconds = sorted(streamed.step_seconds)
    utterances = [{"id": i, "ref": r, "hyp": h, "first_token_s": _rounded(first), "final_s": _rounded(final)}
                  for i, r, h, first, final in zip(eval_set.ids, eval_set.texts, streamed.texts,
                                                   streamed.first_token_seconds, streamed.final_seconds)]
    entry = {
        "att_context_size": list(att_context_size),
        "latency_ms": lookahead_ms(att_context_size),
        "algorithmic_latency_ms": lookahead_ms(att_context_size),
        "audio_seconds": sum(len(a) for a in eval_set.audios) / SAMPLE_RATE,
        "compute_seconds": sum(streamed.compute_seconds),
        "chunk_step_seconds_p50": _percentile(seconds, 50),
        "chunk_step_seconds_p95": _percentile(seconds, 95),
        "utterances": utterances,
    }
    if offline is not None:
        for utt, streamed_tokens, offline_tokens in zip(utterances, streamed.tokens, offline.tokens):
            utt["offline_diff"] = count_token_differences([streamed_tokens], [offline_tokens])
    return entry


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summarise(per_set: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Add WERs, real-time factor and latency percentiles to each ``{set: {"<ms>ms": entry_of(...)}}`` entry, from
    its (possibly gathered from several ranks) utterances.

    Latencies in seconds: ``first_token_latency_s_*`` from the start of an utterance's audio to its first token
    on screen (utterances without tokens left out); ``final_latency_s_*`` from its last audio to its final
    transcript. With ``check_offline``: ``offline_token_differences`` (total) and ``offline_differing_utterances``.
    """
    for by_lookahead in per_set.values():
        for entry in by_lookahead.values():
            utts = entry["utterances"]
            entry.update(word_error_rates([u["ref"] for u in utts], [u["hyp"] for u in utts]))
            entry["rtf"] = entry["compute_seconds"] / max(entry["audio_seconds"], 1e-9)
            first = [u["first_token_s"] for u in utts if u.get("first_token_s") is not None]
            final = [u["final_s"] for u in utts if u.get("final_s") is not None]
            for name, values in (("first_token", first), ("final", final)):
                entry[f"{name}_latency_s_p50"] = _percentile(values, 50)
                entry[f"{name}_latency_s_p95"] = _percentile(values, 95)
            if utts and all("offline_diff" in u for u in utts):
                entry["offline_token_differences"] = sum(u["offline_diff"] for u in utts)
                entry["offline_differing_utterances"] = sum(1 for u in utts if u["offline_diff"])
    return per_set


def wer_metrics(per_set: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Flat ``stream_wer/<set>/<ms>ms`` metrics for the loggers."""
    return {f"stream_wer/{name}/{key}": entry["wer"] for name, by_lookahead in per_set.items()
            for key, entry in by_lookahead.items()}


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return path


def stream_sets(recognizer: StreamingRecognizer, eval_sets: Sequence[EvalSet],
                lookaheads: Sequence[Sequence[int]], check_offline: bool = False) -> dict[str, dict[str, dict]]:
    """``{set: {"<ms>ms": entry_of(...)}}`` for every set and lookahead (WERs not yet computed).

    All sets are streamed together, as one server's streams: fuller batches take fewer chunk steps, and on
    CPU a small model's chunk step costs nearly as much for a few streams as for many. Features are computed once
    for every lookahead. Each set's compute is the share of the steps its own streams took part in.
    """
    audios = [audio for es in eval_sets for audio in es.audios]
    features = recognizer.features(audios)
    bounds = np.cumsum([0] + [len(es.audios) for es in eval_sets])
    per_set: dict[str, dict[str, dict]] = {es.name: {} for es in eval_sets}
    for la in lookaheads:
        streamed = recognizer.stream(audios, la, features)
        offline = recognizer.offline(audios, la) if check_offline else None
        for es, start, stop in zip(eval_sets, bounds[:-1], bounds[1:]):
            per_set[es.name][f"{lookahead_ms(la)}ms"] = entry_of(
                es, la, streamed.part(start, stop), offline.part(start, stop) if offline else None)
    return per_set


def evaluate_model(model, sets: dict[str, str], lookaheads: Sequence[Sequence[int]],
                   max_utterances: int | None = None, batch_size: int = 32, check_offline: bool = False) -> dict:
    """Full report of one model: ``{"sets": {set: {"<ms>ms": {wer, wer_normalized, utterances, ...}}}}``;
    with ``check_offline``, each entry also counts the tokens by which streaming differs from offline."""
    eval_sets = [load_eval_set(name, path, max_utterances) for name, path in sets.items()]
    recognizer = StreamingRecognizer(model, batch_size)
    return {"sets": summarise(stream_sets(recognizer, eval_sets, lookaheads, check_offline))}


def load_audio_file(path: str | Path) -> np.ndarray:
    """A wav/flac/opus/... file as 16 kHz mono float32 (channels averaged)."""
    audio = Recording.from_file(str(path)).resample(SAMPLE_RATE).load_audio()
    return audio.mean(axis=0).astype(np.float32)


def show_partials(model, audio_path: str | Path, lookaheads: Sequence[Sequence[int]], write=print) -> dict[str, str]:
    """Stream one audio file per lookahead and ``write`` the hypothesis each time it grows (with the seconds of
    audio heard so far), as a live caption would. Returns the final transcript per ``"<ms>ms"``."""
    audio = load_audio_file(audio_path)
    recognizer = StreamingRecognizer(model, batch_size=1)
    finals = {}
    for la in lookaheads:
        write(f"== {audio_path} at lookahead {list(la)} ({lookahead_ms(la)} ms chunks), "
              f"{len(audio) / SAMPLE_RATE:.2f} s of audio")
        shown = ""
        for heard, text in recognizer.timed_partials(audio, la):
            if text != shown:
                write(f"{heard:7.2f} s | {text}")
                shown = text
        write(f"  final   | {shown}")
        finals[f"{lookahead_ms(la)}ms"] = shown
    return finals
