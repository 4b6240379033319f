"""Streaming evaluation reports: per-run WER tables and plots, latency summaries, and the one-file live CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from recipes.config import CONF, REPO
from recipes.evaluate.reports import latency_table, update_run_reports
from recipes.evaluate.run import run, stream_sets, summarise
from recipes.evaluate.sets import EvalSet
from recipes.streaming.engine import StreamingRecognizer
from tests.support.runs import subprocess_env
from tests.support.streaming import random_audios

CONFIG = CONF / "evaluate.yaml"

KEYS = {"80ms": [70, 0], "1120ms": [70, 13]}


def evaluate_config(overrides: list[str]):
    return OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(overrides))


def entry(wer: float, ms: str, first: list[float | None], final: list[float], diffs: list[int] | None = None) -> dict:
    utts = [
        {"id": f"u{i}", "ref": "a b c d", "hyp": "a b c d" if i else "a b x d", "first_token_s": f, "final_s": g}
        for i, (f, g) in enumerate(zip(first, final))
    ]
    if diffs is not None:
        for utt, diff in zip(utts, diffs):
            utt["offline_diff"] = diff
    return {
        "att_context_size": KEYS[ms],
        "algorithmic_latency_ms": int(ms[:-2]),
        "audio_seconds": 10.0,
        "compute_seconds": 0.5,
        "chunk_step_seconds_p50": 0.01,
        "chunk_step_seconds_p95": 0.02,
        "utterances": utts,
        "wer": wer,
        "wer_normalized": wer,
    }


def write(checkpoint_dir, name: str, step: int, wer: float) -> None:
    sets = {
        s: {ms: entry(wer + (0.1 if ms == "80ms" else 0.0), ms, [0.5, 0.7], [0.01, 0.02]) for ms in KEYS}
        for s in ("target_dev", "general_dev")
    }
    report = {"step": step, "epoch": 0, "sets": sets, "checkpoint": str(checkpoint_dir / name)}
    (checkpoint_dir / f"{name}.stream_wer.json").write_text(json.dumps(report))


def test_run_reports_table_and_plot_one_row_per_step(tmp_path):
    assert update_run_reports(tmp_path) == []
    write(tmp_path, "step000100.ckpt", 100, 0.5)
    write(tmp_path, "step000200.ckpt", 200, 0.3)
    write(tmp_path, "last.ckpt", 200, 0.3)  # the same step again: not a row of its own
    (tmp_path / "broken.ckpt.stream_wer.json").write_text("{")  # half-written: skipped
    table, plot = update_run_reports(tmp_path)
    assert (table.name, plot.name) == ("stream_wer.md", "stream_wer.png")
    text = table.read_text()
    assert "| checkpoint | target_dev @80ms | target_dev @1120ms | general_dev @80ms | general_dev @1120ms |" in text
    assert "| step 100 (step000100.ckpt) | 60.0 | 50.0 | 60.0 | 50.0 |" in text
    assert "| step 200 (step000200.ckpt) | 40.0 | 30.0 | 40.0 | 30.0 |" in text
    assert "last.ckpt" not in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".partial.*"))


def test_summarise_adds_latency_percentiles_and_offline_differences():
    per_set = {"dev": {"80ms": entry(0.0, "80ms", [0.2, None, 0.4], [0.01, 0.03, 0.02], diffs=[0, 2, 0])}}
    summary = summarise(per_set)["dev"]["80ms"]
    assert summary["first_token_latency_s_p50"] == pytest.approx(0.3)  # utterance without tokens left out
    assert summary["final_latency_s_p50"] == pytest.approx(0.02)
    assert summary["offline_token_differences"] == 2 and summary["offline_differing_utterances"] == 1
    assert summary["wer"] == pytest.approx(1 / 12) and summary["rtf"] == pytest.approx(0.05)
    row = latency_table({"dev": per_set["dev"]}).splitlines()[-1]
    assert row.startswith("| dev | 80ms | 80 | 10.0 / 20.0 | 300 / ") and row.endswith("| 0.0500 | 2 |")


def test_sets_streamed_together_keep_their_own_transcripts_and_compute(random_model):  # noqa: F811
    one = EvalSet("one", ["a", "b"], random_audios([1.0, 3.0], seed=4), ["x", "y"])
    two = EvalSet("two", ["c", "d", "e"], random_audios([2.0, 0.5, 1.5], seed=5), ["z", "w", "v"])
    recognizer = StreamingRecognizer(random_model, batch_size=4)
    together = stream_sets(recognizer, [one, two], [[70, 1]], check_offline=True)
    for es in (one, two):
        entry = together[es.name]["160ms"]
        assert [u["id"] for u in entry["utterances"]] == es.ids
        assert [u["hyp"] for u in entry["utterances"]] == recognizer.stream(es.audios, [70, 1]).texts
        assert [u["offline_diff"] for u in entry["utterances"]] == [0] * len(es.ids)
        assert entry["audio_seconds"] == pytest.approx(sum(len(a) for a in es.audios) / 16000)
        assert entry["compute_seconds"] > 0

    audios = one.audios + two.audios
    streamed = recognizer.stream(audios, [70, 1])
    assert sum(streamed.compute_seconds) == pytest.approx(sum(streamed.step_seconds))  # every step shared out
    assert recognizer.stream(audios, [70, 1], recognizer.features(audios)).tokens == streamed.tokens
    pristine = [audio.copy() for audio in audios]
    random_model.train()  # as between evaluations in training: features must still come without dither
    try:
        in_training = recognizer.features(audios)
    finally:
        random_model.eval()
    assert all(np.array_equal(a, b) for a, b in zip(audios, pristine))  # NeMo dithers its input in place
    assert all(torch.equal(a, b) for a, b in zip(in_training, recognizer.features(pristine)))
    part = streamed.part(2, 4)
    assert (part.texts, part.final_seconds) == (streamed.texts[2:4], streamed.final_seconds[2:4])
    assert part.step_seconds == streamed.step_seconds


def test_cli_streams_one_audio_file_and_shows_growing_partials(random_model, tmp_path, capsys):  # noqa: F811
    path = tmp_path / "one.flac"
    sf.write(path, np.concatenate(random_audios([1.5], seed=3)), 16000)
    cfg = evaluate_config(["model=unused.nemo", f"audio={path}", "lookaheads=[[70,1]]"])
    finals = run(cfg, model=random_model)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"== {path} (channel mix) at lookahead [70, 1] (160 ms chunks), 1.50 s of audio")
    partial_lines = [line for line in lines[1:] if " s | " in line]
    heard = [float(line.split(" s | ")[0]) for line in partial_lines]
    assert len(partial_lines) >= 2 and heard == sorted(heard) and heard[-1] <= 1.5
    texts = [line.split(" s | ", 1)[1] for line in partial_lines]
    assert all(later.startswith(earlier) or len(later) > len(earlier) for earlier, later in zip(texts, texts[1:]))
    assert lines[-1] == f"  final   | {finals['160ms']}" and finals["160ms"] == texts[-1]


def test_cli_needs_exactly_one_of_data_and_audio(random_model):  # noqa: F811
    with pytest.raises(ValueError, match="exactly one of data"):
        run(evaluate_config(["model=unused.nemo"]), model=random_model)


def test_compare_prints_one_row_per_report_long_form_apart_and_says_its_usage(tmp_path):
    def report(wer: float):
        sets = {
            name: {ms: entry(wer * factor, ms, [0.5], [0.01]) for ms in KEYS}
            for name, factor in (("dev", 1), ("dev_20min", 3), ("dev_20min_one_by_one", 2))
        }
        path = tmp_path / f"{wer}.json"
        path.write_text(json.dumps({"sets": sets}))
        return path

    env = subprocess_env(PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "recipes.evaluate.compare"]
    table = subprocess.run(
        [*command, f"base={report(0.5)}", f"tuned={report(0.25)}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0
    short, long_form = table.stdout.split("Long-form streams")
    assert "| base | 50.0 | 50.0 |" in short and "| tuned | 25.0 | 25.0 |" in short and "dev_20min" not in short
    # a long-form set beside its one-by-one twin: the stream's WER, the isolated utterances' and the ratio
    assert "| tuned | dev_20min | 75.0 / 50.0 (1.50x) | 75.0 / 50.0 (1.50x) |" in long_form
    for args in ([], ["base"], [f"base={tmp_path / 'missing.json'}"]):
        usage = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=60)
        assert usage.returncode == 2 and usage.stdout == ""
        assert usage.stderr.count("\n") == 1 and usage.stderr.startswith("recipes.evaluate.compare: error: ")
