"""Long-form speech: continuous dev streams built by data prep, continuous batches in training, their WER beside the
short sets after a checkpoint, and the forgetting flags of the results card and the interpolation choice."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from omegaconf import OmegaConf

from data_prep.long_form import build_long_form
from recipes.config import CONF, compose_config
from recipes.export.card import long_form_section
from recipes.finetune.continuous import ContinuousSpeech, add_continuous_speech
from recipes.finetune.train import train, train_data_config
from recipes.interpolate.wise import choose_alpha, forgetting_flags, tradeoff_table
from recipes.model_files import load_model
from tests.support.models import BASE_MODEL
from tests.support.runs import run_cli

GENERAL = Path("data/prepared/demo_general")


def audio_of(cut) -> np.ndarray:
    return cut.load_audio()[0]


def test_joined_streams_hold_every_utterance_at_its_place_with_pauses_in_range(demo_workdir, tmp_path):
    source = demo_workdir / GENERAL / "dev" / "cuts.jsonl.gz"
    summary = build_long_form(source, tmp_path / "a", "joined", 0.5, 2, [0.2, 0.6], seed=3)
    streams = CutSet.from_file(tmp_path / "a" / "cuts.jsonl.gz").to_eager()
    segments = CutSet.from_file(tmp_path / "a" / "segments.jsonl.gz").to_eager()
    originals = {c.id: c for c in CutSet.from_file(source)}
    assert len(streams) == 2 and [s["utterances"] for s in summary["streams"]] == [len(c.supervisions) for c in streams]
    assert sum(len(c.supervisions) for c in streams) == len(segments)
    used = []
    for stream in streams:
        assert 25 < stream.duration <= 30.0  # ends where the next utterance would not fit
        audio = audio_of(stream)
        ends = [0.0]
        for sup in stream.supervisions:
            original = originals[sup.custom["source_cut"]]
            assert sup.text == " ".join(s.text for s in original.supervisions)
            start = round(sup.start * stream.sampling_rate)
            expected = audio_of(original)
            np.testing.assert_array_equal(audio[start : start + len(expected)], expected)
            pause = sup.start - ends[-1]
            assert pause == 0.0 if ends == [0.0] else 0.2 - 1e-3 <= pause <= 0.6 + 1e-3
            ends.append(sup.end)
            used.append(original.id)
    # Shuffled passes: every utterance once before any comes back.
    first_pass = used[: len(originals)]
    assert len(set(first_pass)) == len(first_pass) == len(originals)
    # The segments manifest is the same utterances one by one, in stream order.
    assert [" ".join(s.text for s in c.supervisions) for c in segments] == [
        s.text for stream in streams for s in stream.supervisions
    ]
    again = build_long_form(source, tmp_path / "b", "joined", 0.5, 2, [0.2, 0.6], seed=3)
    assert again["streams"] == summary["streams"]
    assert (tmp_path / "a/audio/stream001.flac").read_bytes() == (tmp_path / "b/audio/stream001.flac").read_bytes()
    # the manifest in another order, under other ids (data prep's ids hash the checkout's path): the same streams
    moved = tmp_path / "moved.jsonl.gz"
    CutSet.from_cuts(c.with_id(f"moved-{i}") for i, c in enumerate(reversed(list(originals.values())))).to_file(moved)
    build_long_form(moved, tmp_path / "c", "joined", 0.5, 2, [0.2, 0.6], seed=3)
    assert (tmp_path / "c/audio/stream001.flac").read_bytes() == (tmp_path / "a/audio/stream001.flac").read_bytes()


def test_recording_streams_are_the_consecutive_segments_of_each_session(demo_workdir, tmp_path):
    source = demo_workdir / GENERAL / "dev" / "cuts.jsonl.gz"
    build_long_form(source, tmp_path, "recordings", 20, 1, [0.2, 1.0], seed=0)
    streams = CutSet.from_file(tmp_path / "cuts.jsonl.gz").to_eager()
    sessions = {}
    for cut in CutSet.from_file(source):
        if "session" in cut.recording.id:
            sessions.setdefault(cut.recording.id, []).append(cut)
    assert sessions and sorted(s.recording.id for s in streams) == sorted(sessions)
    for stream in streams:
        parts = sorted(sessions[stream.recording.id], key=lambda c: c.start)
        assert stream.start == parts[0].start and stream.end == pytest.approx(parts[-1].end)
        assert [s.text for s in stream.supervisions] == [c.supervisions[0].text for c in parts]
        audio = audio_of(stream)
        for sup, part in zip(stream.supervisions, parts):
            start = round(sup.start * stream.sampling_rate)
            expected = audio_of(part)
            np.testing.assert_array_equal(audio[start : start + len(expected)], expected)


def test_prepare_builds_the_corpus_streams_and_the_data_config_finds_them(demo_workdir, monkeypatch):
    monkeypatch.chdir(demo_workdir)
    cfg = compose_config(CONF, "finetune", ["experiment=demo_finetune"])
    for name, path in cfg.data.long_form_sets.items():
        cuts = CutSet.from_file(path).to_eager()
        assert len(cuts) == 1 and 50 < cuts[0].duration <= 60, name
    summary = json.loads((demo_workdir / GENERAL / "dev_20min" / "summary.json").read_text())
    assert 19.5 * 60 < summary["streams"][0]["seconds"] <= 20 * 60


def test_mistakes_are_one_line_each_and_exit_2(demo_workdir):
    args = ["source=nope.jsonl.gz", "output_dir=x", "mode=chunks", "minutes=0", "gap_s=[1.0,0.5]"]
    done = run_cli("data_prep.long_form", args, demo_workdir)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.splitlines() == [
        "data_prep.long_form: error: source=nope.jsonl.gz: not found: prepare the corpus first (python -m data_prep "
        "corpus=...)",
        "data_prep.long_form: error: mode=chunks: not one of joined, recordings (joined: utterances joined | "
        "recordings: a recording's segments)",
        "data_prep.long_form: error: minutes=0: give a number > 0 (the most a stream lasts)",
        "data_prep.long_form: error: gap_s=[1.0,0.5]: give [low, high] with low <= high (joined: seconds of silence "
        "between utterances)",
    ]
    assert not (demo_workdir / "x").exists()


def test_continuous_batches_join_utterances_in_order_up_to_max_duration(demo_workdir):
    cuts = CutSet.from_file(demo_workdir / GENERAL / "train" / "cuts.jsonl.gz").subset(first=12).to_eager()
    joined = ContinuousSpeech(share=1.0, max_duration=8.0, gap_s=(0.3, 0.5), seed=0)(cuts)
    assert len(joined) < len(cuts)
    assert all(c.duration <= 8.0 for c in joined)
    assert [s.text for c in joined for s in c.supervisions] == [c.supervisions[0].text for c in cuts]
    total = sum(c.duration for c in cuts)
    assert total + 0.3 * (len(cuts) - len(joined)) <= sum(c.duration for c in joined)
    assert sum(c.duration for c in joined) <= total + 0.5 * (len(cuts) - len(joined)) + 1e-6
    assert [c.id for c in ContinuousSpeech(1.0, 8.0, (0.3, 0.5), 0)(cuts)] == [c.id for c in joined]
    # the same audio under other ids (a checkout at another path): joined the same way
    moved = CutSet.from_cuts(c.with_id(f"elsewhere-{i}") for i, c in enumerate(cuts))
    assert [c.duration for c in ContinuousSpeech(1.0, 8.0, (0.3, 0.5), 0)(moved)] == [c.duration for c in joined]
    assert ContinuousSpeech(share=0.0, max_duration=8.0, gap_s=(0.3, 0.5), seed=0)(cuts) is cuts
    # A share of the batches: each batch's draw depends on the batch alone.
    batches = [CutSet.from_cuts(list(cuts)[i : i + 3]) for i in range(10)]
    glued = [len(ContinuousSpeech(0.5, 8.0, (0.3, 0.5), 7)(b)) < len(b) for b in batches]
    assert any(glued) and not all(glued)


def test_the_training_loader_gives_the_model_joined_utterances_and_their_tokens(demo_workdir, monkeypatch):
    monkeypatch.chdir(demo_workdir)
    cfg = compose_config(
        CONF, "finetune", ["experiment=demo_finetune", "data.train_ds.batch_duration=20", "data.continuous.share=1.0"]
    )
    model = load_model(str(BASE_MODEL))
    model.setup_training_data(train_data_config(cfg.data.train_ds, 0))
    plain = next(iter(model._train_dl))
    model.setup_training_data(train_data_config(cfg.data.train_ds, 0))
    add_continuous_speech(model._train_dl, cfg.data.continuous, cfg.seed)
    joined = next(iter(model._train_dl))
    assert len(joined[1]) < len(plain[1]) and joined[1].max() > plain[1].max()
    assert joined[1].max() <= cfg.data.continuous.max_duration * 16000
    # The same utterances: their tokens, joined in order, are the joined cuts' tokens.
    text = " ".join(model.tokenizer.ids_to_text(t[:n].tolist()) for t, n in zip(plain[2], plain[3]))
    assert " ".join(model.tokenizer.ids_to_text(t[:n].tolist()) for t, n in zip(joined[2], joined[3])) == text


def test_a_fine_tune_on_continuous_batches_reports_long_form_wer_beside_the_short_sets(demo_workdir, monkeypatch):
    monkeypatch.chdir(demo_workdir)
    overrides = [
        "experiment=demo_finetune",
        "run_name=long_form",
        f"model.init_from={BASE_MODEL}",
        "trainer.max_steps=2",
        "trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=0",
        "data.train_ds.batch_duration=12",
        "data.continuous.share=1.0",
        "logger=none",
        "~callbacks.lr_monitor",
        "callbacks.checkpoint.max_utterances=4",
        "callbacks.checkpoint.evaluate_base=false",
        "callbacks.checkpoint.lookaheads=[[70,13],[70,1]]",
    ]
    trainer = train(compose_config(CONF, "finetune", overrides))
    report = json.loads(Path(f"{trainer.checkpoint_callback.dirpath}/step000002.ckpt.stream_wer.json").read_text())
    assert set(report["sets"]) == {"target_dev", "general_dev", "target_1min", "general_1min"}
    for name in ("target_1min", "general_1min"):
        assert set(report["sets"][name]) == {"1120ms", "160ms"}
        (stream,) = report["sets"][name]["1120ms"]["utterances"]
        assert len(stream["ref"].split()) > 60  # a minute of references, joined
    run = OmegaConf.load(Path(trainer.checkpoint_callback.dirpath).parent / "run_config.yaml")
    assert set(run.callbacks.checkpoint.long_form_sets) == {"target_1min", "general_1min"}


def report_with(wers: dict[str, float]) -> dict:
    return {"sets": {name: {"160ms": {"wer": w}, "1120ms": {"wer": w}} for name, w in wers.items()}}


def test_a_fine_tune_worse_than_the_base_on_long_form_is_flagged_by_the_card_and_not_chosen():
    base = report_with({"target_dev": 0.9, "general_dev": 0.10, "general_long": 0.12})
    good = report_with({"target_dev": 0.2, "general_dev": 0.10, "general_long": 0.13})
    forgot = report_with({"target_dev": 0.1, "general_dev": 0.11, "general_long": 0.60})
    assert "No long-form set is worse" in "\n".join(long_form_section(base, good, ["general_long"], 1.2))
    card = "\n".join(long_form_section(base, forgot, ["general_long"], 1.2))
    assert "worse than the base's by more than 1.2x:** general_long @160ms (5.00x), general_long @1120ms" in card
    assert long_form_section(base, forgot, [], 1.2) == []

    results = {0.0: base["sets"], 0.5: good["sets"], 1.0: forgot["sets"]}
    assert choose_alpha(results, "target_dev", "general_dev", 1.2) == 1.0  # the short sets alone do not see it
    assert choose_alpha(results, "target_dev", "general_dev", 1.2, ["general_long"], 1.2) == 0.5
    assert "1 (fine-tuned) 5.00x" in forgetting_flags(results, ["general_long"], 1.2)
    table = tradeoff_table(results, "target_dev", "general_dev", 0.5, ["general_long"])
    assert "long-form x base (worst)" in table.splitlines()[0] and table.splitlines()[-1].endswith("| 5.00 |")


def test_stream_order_does_not_depend_on_the_manifest_order(demo_workdir, tmp_path):
    source = demo_workdir / GENERAL / "dev" / "cuts.jsonl.gz"
    cuts = list(CutSet.from_file(source))
    random.Random(0).shuffle(cuts)
    CutSet.from_cuts(cuts).to_file(tmp_path / "shuffled.jsonl.gz")
    a = build_long_form(source, tmp_path / "a", "joined", 0.3, 1, [0.2, 0.6], seed=1)
    b = build_long_form(tmp_path / "shuffled.jsonl.gz", tmp_path / "b", "joined", 0.3, 1, [0.2, 0.6], seed=1)
    assert a["streams"] == b["streams"]
