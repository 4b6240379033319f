"""Word error rates with jiwer, as written and after Whisper's English normalisation."""

from __future__ import annotations

from typing import Sequence

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

_normalizer = EnglishTextNormalizer()


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
