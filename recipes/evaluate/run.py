"""Streaming WER of a model on dev sets, per lookahead: the numbers a user deploys by."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_evaluate
from recipes.evaluate.reports import latency_table, wer_table, write_report
from recipes.evaluate.sets import EvalSet, channels_of, load_eval_set, open_audio_file
from recipes.evaluate.wer import word_error_rates
from recipes.model_files import load_model
from recipes.streaming.engine import StreamingRecognizer, Transcripts, count_token_differences
from recipes.streaming.geometry import SAMPLE_RATE, lookahead_ms
from recipes.transcribe.channels import parse_channel
from recipes.transcribe.features import BlockFeatures, placeholder


def entry_of(
    eval_set: EvalSet, att_context_size: Sequence[int], streamed: Transcripts, offline: Transcripts | None = None
) -> dict:
    """One set at one lookahead: per-utterance hypotheses and latencies, and the compute they took.

    With the ``offline`` pass (same chunked-limited masks), also per utterance the number of tokens by which
    streaming differs from it (``offline_diff``; 0 for an exact cache-aware engine).
    """
    seconds = sorted(streamed.step_seconds)
    utterances = [
        {"id": i, "ref": r, "hyp": h, "first_token_s": _rounded(first), "final_s": _rounded(final)}
        for i, r, h, first, final in zip(
            eval_set.ids, eval_set.texts, streamed.texts, streamed.first_token_seconds, streamed.final_seconds
        )
    ]
    entry = {
        "att_context_size": list(att_context_size),
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
    return {
        f"stream_wer/{name}/{key}": entry["wer"]
        for name, by_lookahead in per_set.items()
        for key, entry in by_lookahead.items()
    }


def stream_sets(
    recognizer: StreamingRecognizer,
    eval_sets: Sequence[EvalSet],
    lookaheads: Sequence[Sequence[int]],
    check_offline: bool = False,
) -> dict[str, dict[str, dict]]:
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
                es, la, streamed.part(start, stop), offline.part(start, stop) if offline else None
            )
    return per_set


def evaluate_model(
    model,
    sets: dict[str, str],
    lookaheads: Sequence[Sequence[int]],
    max_utterances: int | None = None,
    batch_size: int = 32,
    check_offline: bool = False,
) -> dict:
    """Full report of one model: ``{"sets": {set: {"<ms>ms": {wer, wer_normalized, utterances, ...}}}}``;
    with ``check_offline``, each entry also counts the tokens by which streaming differs from offline."""
    eval_sets = [load_eval_set(name, path, max_utterances) for name, path in sets.items()]
    recognizer = StreamingRecognizer(model, batch_size)
    return {"sets": summarise(stream_sets(recognizer, eval_sets, lookaheads, check_offline))}


def show_partials(
    model, audio_path: str | Path, lookaheads: Sequence[Sequence[int]], channel: int | str = "mix", write=print
) -> dict[str, str]:
    """Stream one audio file per lookahead (and per channel: ``channel=each``) and ``write`` the hypothesis each
    time it grows (with the seconds of audio heard so far), as a live caption would. Returns the final transcript
    per ``"<ms>ms"`` (per ``"<ms>ms/ch<channel>"`` with ``each``)."""
    recognizer = StreamingRecognizer(model, batch_size=1)
    finals = {}
    for heard_on in channels_of(audio_path, channel):
        audio = open_audio_file(audio_path, heard_on)
        for la in lookaheads:
            write(
                f"== {audio_path} (channel {heard_on}) at lookahead {list(la)} ({lookahead_ms(la)} ms chunks), "
                f"{audio.num_samples / SAMPLE_RATE:.2f} s of audio"
            )
            shown = ""
            # read and featurised a block at a time as the chunks need them: memory independent of the file's length
            features = BlockFeatures(audio, recognizer)
            for heard, text in recognizer.timed_partials(placeholder(audio.num_samples), la, features):
                if text != shown:
                    write(f"{heard:7.2f} s | {text}")
                    shown = text
            write(f"  final   | {shown}")
            finals[f"{lookahead_ms(la)}ms" + (f"/ch{heard_on}" if channel == "each" else "")] = shown
    return finals


def run(cfg: DictConfig, model=None) -> dict:
    """Evaluate (``data``) or stream one file (``audio``) as ``cfg`` says; returns the report or final transcripts."""
    check_evaluate(cfg, model_file=model is None)
    model = model if model is not None else load_model(cfg.model, key="model")
    lookaheads = OmegaConf.to_container(cfg.lookaheads) if cfg.lookaheads else model.encoder.att_context_size_all
    if cfg.audio is not None:
        return show_partials(model, cfg.audio, lookaheads, parse_channel(cfg.get("channel", "mix"), "channel"))
    data = OmegaConf.to_container(cfg.data) if isinstance(cfg.data, DictConfig) else {"set": cfg.data}
    report = evaluate_model(model, data, lookaheads, cfg.max_utterances, cfg.batch_size, cfg.check_offline)
    if cfg.output:
        write_report({"model": cfg.model, **report}, cfg.output)
    print(wer_table({cfg.model: report["sets"]}))
    print()
    print(latency_table(report["sets"]))
    return report
