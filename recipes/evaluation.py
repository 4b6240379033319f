"""Streaming WER of a model on dev sets, per lookahead: the numbers a user deploys by."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jiwer
import numpy as np
from lhotse import CutSet
from whisper_normalizer.english import EnglishTextNormalizer

from recipes.streaming import StreamingRecognizer, lookahead_ms

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
        audios.append(cut.resample(16000).load_audio()[0])
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


def evaluate(recognizer: StreamingRecognizer, eval_set: EvalSet, att_context_size: Sequence[int]) -> dict:
    """Streaming transcripts of one set at one lookahead, with the per-utterance hypotheses."""
    result = recognizer.stream(eval_set.audios, att_context_size)
    seconds = sorted(result.step_seconds)
    return {
        "att_context_size": list(att_context_size),
        "latency_ms": lookahead_ms(att_context_size),
        "audio_seconds": sum(len(a) for a in eval_set.audios) / 16000,
        "compute_seconds": sum(seconds),
        "chunk_step_seconds_p50": float(np.percentile(seconds, 50)) if seconds else 0.0,
        "chunk_step_seconds_p95": float(np.percentile(seconds, 95)) if seconds else 0.0,
        "utterances": [{"id": i, "ref": r, "hyp": h} for i, r, h in zip(eval_set.ids, eval_set.texts, result.texts)],
    }


def summarise(per_set: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Add WERs to each ``{set: {"<ms>ms": evaluate(...)}}`` entry from its (possibly gathered) utterances."""
    for by_lookahead in per_set.values():
        for entry in by_lookahead.values():
            utts = entry["utterances"]
            entry.update(word_error_rates([u["ref"] for u in utts], [u["hyp"] for u in utts]))
            entry["rtf"] = entry["compute_seconds"] / max(entry["audio_seconds"], 1e-9)
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
                lookaheads: Sequence[Sequence[int]]) -> dict[str, dict[str, dict]]:
    """``{set: {"<ms>ms": evaluate(...)}}`` for every set and lookahead (WERs not yet computed)."""
    return {es.name: {f"{lookahead_ms(la)}ms": evaluate(recognizer, es, la) for la in lookaheads}
            for es in eval_sets}


def evaluate_model(model, sets: dict[str, str], lookaheads: Sequence[Sequence[int]],
                   max_utterances: int | None = None, batch_size: int = 32) -> dict:
    """Full report of one model: ``{"sets": {set: {"<ms>ms": {wer, wer_normalized, utterances, ...}}}}``."""
    eval_sets = [load_eval_set(name, path, max_utterances) for name, path in sets.items()]
    return {"sets": summarise(stream_sets(StreamingRecognizer(model, batch_size), eval_sets, lookaheads))}
