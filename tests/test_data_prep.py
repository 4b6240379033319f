"""Data preparation: input forms, every rejection reason, resume, duration bins, clean stops."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from omegaconf import OmegaConf

from data_prep.errors import REASONS, DataPrepError
from data_prep.prepare import prepare_corpus
from data_prep.text import TextPolicy, normalise
from data_prep.tokenizer import load_sentencepiece, train_sentencepiece
from data_prep.train_tokenizer import train_domain_tokenizer
from recipes.config import CONF, REPO, compose_config

# ---------------------------------------------------------------------------------------------- helpers


def tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """A quiet sine (and one per extra channel), written with soundfile in the format of the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    x = np.stack([0.1 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)
    sf.write(path, x if channels > 1 else x[:, 0], rate)
    return path


def write_lines(path: Path, rows: list, gz: bool = False) -> Path:
    """JSONL from dicts; bytes and str rows are written as they are (to make broken lines)."""
    data = b""
    for row in rows:
        if isinstance(row, dict):
            row = json.dumps(row)
        data += (row if isinstance(row, bytes) else row.encode("utf-8")) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_cfg(tmp_path: Path, splits: dict, *overrides: str, name: str = "c"):
    """The real prepare config (corpus=demo_general's policy: lower_strip), pointed at test inputs."""
    cfg = compose_config(
        CONF / "data_prep",
        "prepare",
        [
            "corpus=demo_general",
            f"corpus.name={name}",
            f"out_root={tmp_path / 'out'}",
            "progress=false",
            "num_workers=1",
            *overrides,
        ],
    )
    OmegaConf.update(cfg, "corpus.splits", splits, merge=False)
    cfg.long_form = {}  # demo_general's dev streams are built from a split these tests do not have
    return cfg


def split_out(tmp_path: Path, split: str = "train", name: str = "c") -> Path:
    return tmp_path / "out" / name / split


def read_rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny English SentencePiece model: every ASCII letter is in its vocabulary, CJK is not."""
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "hello there general kenobi",
        "second part of the call",
        "a stereo recording from a phone",
        "whole file is fine",
        "thank you for calling please hold",
    ] * 20
    return train_sentencepiece(texts, tmp_path_factory.mktemp("tok"), vocab_size=60)


# ------------------------------------------------------------------------------------ text normalisation


def test_text_policies():
    pnc = TextPolicy(policy="pnc")
    lower = TextPolicy(policy="lower_strip")
    assert normalise("  Hello,\tWorld!\u200b  It\u2019s  ﬁne. ", pnc) == "Hello, World! It's fine."
    assert normalise("  Hello,\tWorld!\u200b  It\u2019s  ﬁne. ", lower) == "hello world it's fine"
    assert normalise("ＡＢＣ 'quoted' rock-n-roll", lower) == "abc quoted rock n roll"
    assert normalise(" ?! ", lower) == ""
    with pytest.raises(ValueError):
        TextPolicy(policy="shout")


# ----------------------------------------------------------------------------------------- input forms


# A Granary row's fields beyond audio, timing and text (and one of the user's own): kept as the cut's custom fields.
GRANARY_FIELDS = {
    "source_lang": "en",
    "target_lang": "en",
    "pnc": "yes",
    "itn": "no",
    "answer": "Hello there.",
    "timestamp": False,
    "diarize": False,
    "decodercontext": "",
    "emotion": "neutral",
    "my_field": 7,
}


def _nemo_rows(audio_prefix: str) -> list[dict]:
    return [
        {
            "audio_filepath": f"{audio_prefix}long.flac",
            "offset": 0.0,
            "duration": 2.0,
            "text": "Hello there, General Kenobi!",
            **GRANARY_FIELDS,
        },
        {
            "audio_filepath": f"{audio_prefix}long.flac",
            "offset": 2.5,
            "duration": 2.0,
            "text": "second part of the call",
        },
    ]


def _input(kind: str, root: Path) -> tuple[dict, list[str]]:
    """Build one input form of the same two segments; returns (input entry, extra overrides)."""
    audio = root / "audio"
    tone(audio / "long.flac", 6.0)
    if kind == "nemo_json":
        # relative paths resolved against a configurable root (corpus.audio_root), not the manifest's folder
        return {"path": str(write_lines(root / "manifests" / "m.json", _nemo_rows("")))}, [f"corpus.audio_root={audio}"]
    if kind == "nemo_jsonl_gz":
        return {"path": str(write_lines(root / "m.jsonl.gz", _nemo_rows("audio/"), gz=True))}, []
    rec = Recording.from_file(audio / "long.flac", recording_id="long")
    sups = [
        SupervisionSegment("s1", "long", 0.0, 2.0, channel=0, text="Hello there, General Kenobi!", language="en"),
        SupervisionSegment("s2", "long", 2.5, 2.0, channel=0, text="second part of the call", language="en"),
    ]
    if kind == "lhotse_cuts":
        cuts = CutSet.from_cuts(
            MonoCut(
                s.id,
                s.start,
                s.duration,
                0,
                recording=rec,
                supervisions=[SupervisionSegment(s.id, "long", 0.0, s.duration, channel=0, text=s.text, language="en")],
            )
            for s in sups
        )
        cuts.to_file(root / "cuts.jsonl.gz")
        return {"path": str(root / "cuts.jsonl.gz")}, []
    if kind == "lhotse_recordings_supervisions":
        RecordingSet.from_recordings([rec]).to_file(root / "recordings.jsonl.gz")
        SupervisionSet.from_segments(sups).to_file(root / "supervisions.jsonl.gz")
        return {"path": str(root / "recordings.jsonl.gz"), "supervisions": str(root / "supervisions.jsonl.gz")}, []
    if kind == "tsv":
        folder = root / "folder"
        tone(folder / "a.wav", 2.0)
        tone(folder / "sub" / "b.flac", 2.0, rate=44100)
        (folder / "transcripts.tsv").write_text(
            "audio\ttext\na.wav\tHello there, General Kenobi!\nsub/b.flac\tsecond part of the call\n", encoding="utf-8"
        )
        return {"path": str(folder / "transcripts.tsv")}, []
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nemo_json", "nemo_jsonl_gz", "lhotse_cuts", "lhotse_recordings_supervisions", "tsv"])
def test_each_input_form(tmp_path, kind):
    entry, extra = _input(kind, tmp_path / "in")
    summary = prepare_corpus(make_cfg(tmp_path, {"train": [entry]}, *extra))
    assert summary["splits"]["train"]["rows"] == {"in": 2, "kept": 2, "rejected": 0}

    cuts = CutSet.from_file(split_out(tmp_path) / "cuts.jsonl.gz").to_eager()
    assert sorted(c.supervisions[0].text for c in cuts) == ["hello there general kenobi", "second part of the call"]
    assert all(c.sampling_rate == 16000 and len(c.supervisions) == 1 for c in cuts)
    shar = CutSet.from_shar(in_dir=split_out(tmp_path) / "shar").to_eager()
    assert sorted(c.id for c in shar) == sorted(c.id for c in cuts)
    for cut in shar:
        audio = cut.load_audio()
        assert audio.shape == (1, round(cut.duration * 16000))
    if kind.startswith("nemo"):
        # several segments of one long file: one Recording, many cuts, Granary fields kept as custom
        assert len({c.recording.id for c in cuts}) == 1
        first = next(c for c in cuts if c.start == 0.0)
        assert first.custom == GRANARY_FIELDS
        assert next(c for c in shar if c.id == first.id).custom["emotion"] == "neutral"


# ------------------------------------------------------------------------------------ every bad row


def test_every_bad_row_is_rejected_with_its_reason(tmp_path, tokenizer_dir):
    audio = tmp_path / "audio"
    tone(audio / "long.flac", 10.0)
    tone(audio / "ok.wav", 2.0)
    tone(audio / "stereo44.wav", 2.0, rate=44100, channels=2)
    tone(audio / "short.wav", 0.5)
    tone(audio / "tiny.wav", 0.1)
    whole = tone(audio / "whole.flac", 4.0).read_bytes()
    (audio / "trunc.flac").write_bytes(whole[: len(whole) // 2])
    (audio / "garbage.wav").write_bytes(b"this is not audio " * 20)
    sf.write(audio / "zero.wav", np.zeros(0, dtype=np.float32), 16000)

    sp = load_sentencepiece(tokenizer_dir)
    assert len(sp.encode("zq xj vk wp qz")) > 6  # more tokens than the 6 encoder frames of 0.5 s

    rows = [
        {
            "audio_filepath": "audio/long.flac",
            "offset": 0.0,
            "duration": 3.0,
            "text": "Hello there, general Kenobi.",
        },  # 1 kept
        {
            "audio_filepath": "audio/long.flac",
            "offset": 3.0,
            "duration": 3.0,
            "text": "second part of the call",
        },  # 2 kept
        {
            "audio_filepath": "audio/stereo44.wav",
            "duration": 2.0,
            "text": "a stereo recording",
        },  # 3 kept: 44.1 kHz stereo
        '{"audio_filepath": "audio/ok.wav", "text": ',  # 4 bad_json
        b'{"audio_filepath": "audio/ok.wav", "duration": 2.0, "text": "caf\xe9"}',  # 5 bad_encoding
        {"audio_filepath": "audio/nope.wav", "duration": 2.0, "text": "missing file"},  # 6 audio_missing
        {"audio_filepath": "audio/trunc.flac", "duration": 4.0, "text": "truncated flac file"},  # 7 audio_undecodable
        {"audio_filepath": "audio/garbage.wav", "duration": 2.0, "text": "not audio at all"},  # 8 audio_unreadable
        {"audio_filepath": "audio/zero.wav", "duration": 1.0, "text": "zero length audio"},  # 9 audio_empty
        {"audio_filepath": "audio/long.flac", "offset": 12.0, "duration": 2.0, "text": "offset past the end"},  # 10
        {"audio_filepath": "audio/long.flac", "offset": 8.5, "duration": 3.0, "text": "runs past the end"},  # 11
        {"audio_filepath": "audio/ok.wav", "duration": 2.0, "text": " ?! "},  # 12 empty_text after normalisation
        {"audio_filepath": "audio/ok.wav", "duration": 7.0, "text": "far from the header"},  # 13 duration_mismatch
        {
            "audio_filepath": "audio/ok.wav",
            "offset": 0.0,
            "duration": 2.0,
            "text": "日本語のテキスト",
        },  # 14 script_mismatch (not Latin letters in an English corpus)
        {"audio_filepath": "audio/short.wav", "duration": 0.5, "text": "zq xj vk wp qz"},  # 15 rnnt_infeasible
        {
            "audio_filepath": "audio/ok.wav",
            "offset": 0.0,
            "duration": 1.0,
            "text": "the quick brown fox jumps over the lazy dog",
        },  # 16 chars_per_second_high
        {"audio_filepath": "audio/long.flac", "offset": 6.0, "duration": 3.5, "text": "a"},  # 17 chars_per_second_low
        {"audio_filepath": "audio/tiny.wav", "duration": 0.1, "text": "hi"},  # 18 too_short
        {
            "audio_filepath": "audio/long.flac",
            "offset": 0.0,
            "duration": 9.5,
            "text": "this segment is longer than the configured maximum",
        },  # 19 too_long
        {
            "audio_filepath": "audio/ok.wav",
            "offset": 0.5,
            "duration": 1.5,
            "text": "bonjour",
            "source_lang": "fr",
        },  # 20
        {
            "audio_filepath": "audio/long.flac",
            "offset": 0.0,
            "duration": 3.0,
            "text": "Hello there, general Kenobi.",
        },  # 21
        {"text": "no audio path"},  # 22 bad_field
        "",  # blank lines are not rows
        {"audio_filepath": "audio/ok.wav", "duration": 2.0, "text": "whole file is fine"},  # 24 kept
        {"audio_filepath": "audio/ok.wav", "duration": 2.0, "text": "a mono file", "channel": 1},  # 25
        {"audio_filepath": "audio/ok.wav", "offset": 0.0, "duration": 1.5, "text": "the ŋaŋ ħeħ"},  # 26 too_many_unk
    ]
    expected = {
        4: "bad_json",
        5: "bad_encoding",
        6: "audio_missing",
        7: "audio_undecodable",
        8: "audio_unreadable",
        9: "audio_empty",
        10: "offset_out_of_range",
        11: "segment_past_end",
        12: "empty_text",
        13: "duration_mismatch",
        14: "script_mismatch",
        15: "rnnt_infeasible",
        16: "chars_per_second_high",
        17: "chars_per_second_low",
        18: "too_short",
        19: "too_long",
        20: "language_mismatch",
        21: "duplicate",
        22: "bad_field",
        25: "channel_out_of_range",
        26: "too_many_unk",
    }
    assert set(expected.values()) == set(REASONS), "every rejection reason has a row here"
    manifest = write_lines(tmp_path / "train.jsonl", rows)

    # several shards on two workers: the pool path is the one exercised here
    cfg = make_cfg(
        tmp_path,
        {"train": [str(manifest)]},
        f"tokenizer={tokenizer_dir}",
        "filters.feasibility=ctc",
        "filters.max_duration=9.0",
        "shar.shard_size=5",
        "num_workers=2",
    )
    summary = prepare_corpus(cfg)["splits"]["train"]

    rejects = read_rejects(split_out(tmp_path) / "rejects.jsonl")
    assert {r["line"]: r["reason"] for r in rejects} == expected
    assert all(r["source"] == str(manifest) and r["detail"] is not None for r in rejects)
    assert summary["rows"] == {"in": 25, "kept": 4, "rejected": 21}
    assert summary["rows"]["in"] == summary["rows"]["kept"] + sum(
        v["rows"] for v in summary["rejected_by_reason"].values()
    )
    assert summary["tokenizer_unk"]["unk_characters"] > 0

    cuts = CutSet.from_file(split_out(tmp_path) / "cuts.jsonl.gz").to_eager()
    assert sorted(c.supervisions[0].text for c in cuts) == [
        "a stereo recording",
        "hello there general kenobi",
        "second part of the call",
        "whole file is fine",
    ]
    shar = {c.supervisions[0].text: c for c in CutSet.from_shar(in_dir=split_out(tmp_path) / "shar")}
    stereo = shar["a stereo recording"]
    assert stereo.sampling_rate == 16000 and stereo.load_audio().shape == (1, 32000)  # resampled, down-mixed
    stereo_src = next(c for c in cuts if c.supervisions[0].text == "a stereo recording")
    assert stereo_src.load_audio().shape == (1, 32000)  # the manifest loads it as 16 kHz mono too


def test_feasibility_rule_follows_the_reference_model(tmp_path, tokenizer_dir):
    """frames >= tokens only for a model with a CTC head; an RNNT-only model may emit up to max_symbols tokens
    per frame; summary.json says which rule ran."""
    from tests.support.models import BASE_MODEL, nemo_with

    def rnnt_only(cfg):
        cfg.pop("aux_ctc")
        cfg["target"] = "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel"

    tone(tmp_path / "audio" / "short.wav", 0.5)
    dense = "zq xj vk wp qz"  # 0.5 s = 6 encoder frames, more tokens than that, 28 chars/s
    assert 6 < len(load_sentencepiece(BASE_MODEL).encode(dense)) <= 10 * 6
    manifest = write_lines(
        tmp_path / "train.jsonl", [{"audio_filepath": "audio/short.wav", "duration": 0.5, "text": dense}]
    )
    rnnt = nemo_with(tmp_path / "rnnt.nemo", rnnt_only)

    def run(*overrides):
        summary = prepare_corpus(make_cfg(tmp_path, {"train": [str(manifest)]}, *overrides))
        assert summary["feasibility"] == summary["splits"]["train"]["feasibility"]
        return summary["splits"]["train"]["rows"]["kept"], summary["feasibility"]

    kept, rule = run(f"tokenizer={BASE_MODEL}")  # the demo base model: RNNT + auxiliary CTC head
    assert kept == 0 and rule["rule"] == "ctc" and "EncDecHybridRNNTCTCBPEModel) has a CTC head" in rule["why"]
    kept, rule = run(f"tokenizer={rnnt}")
    assert kept == 1 and rule == {
        "rule": "rnnt",
        "max_symbols": 10,
        "why": "rnnt.nemo (EncDecRNNTBPEModel) has no CTC head",
        "encoder_frame_s": 0.08,
    }
    kept, rule = run(f"tokenizer={rnnt}", "filters.max_symbols=1")
    assert kept == 0 and rule["max_symbols"] == 1
    assert "tokens > 1 x 6 encoder frames" in read_rejects(split_out(tmp_path) / "rejects.jsonl")[0]["detail"]
    assert run()[1]["rule"] is None  # no tokenizer: no token counts, no check
    with pytest.raises(DataPrepError, match="filters.feasibility=auto reads the model's heads from tokenizer=<.nemo>"):
        prepare_corpus(make_cfg(tmp_path, {"train": [str(manifest)]}, f"tokenizer={tokenizer_dir}"))
    with pytest.raises(DataPrepError, match="filters.max_symbols=None: the rnnt rule needs"):
        prepare_corpus(
            make_cfg(tmp_path, {"train": [str(manifest)]}, f"tokenizer={tokenizer_dir}", "filters.feasibility=rnnt")
        )


def test_split_with_nothing_kept_still_finishes(tmp_path):
    manifest = write_lines(tmp_path / "train.jsonl", ["not json", {"audio_filepath": "nope.wav", "text": "gone"}])
    summary = prepare_corpus(make_cfg(tmp_path, {"train": [str(manifest)]}))["splits"]["train"]
    assert summary["rows"] == {"in": 2, "kept": 0, "rejected": 2} and summary["duration_bins"] == []
    assert gzip.decompress((split_out(tmp_path) / "cuts.jsonl.gz").read_bytes()) == b""
    assert not (split_out(tmp_path) / "duration_bins.yaml").exists()


# ---------------------------------------------------------------------------------------------- resume


def test_rerun_reuses_finished_shards(tmp_path):
    tone(tmp_path / "audio" / "long.flac", 12.0)
    rows = [
        {"audio_filepath": "audio/long.flac", "offset": float(i), "duration": 1.0, "text": f"segment number {i}"}
        for i in range(6)
    ]
    manifest = write_lines(tmp_path / "train.jsonl", rows)
    cfg = make_cfg(tmp_path, {"train": [str(manifest)]}, "shar.shard_size=2")
    shar_dir = split_out(tmp_path) / "shar"

    first = prepare_corpus(cfg)["splits"]["train"]
    assert first["shards"] == {"total": 3, "reused": 0, "written": 3}
    stamps = {p.name: p.stat().st_mtime_ns for p in shar_dir.iterdir()}
    cuts_before = gzip.decompress((split_out(tmp_path) / "cuts.jsonl.gz").read_bytes())

    second = prepare_corpus(cfg)["splits"]["train"]
    assert second["shards"] == {"total": 3, "reused": 3, "written": 0}
    assert {p.name: p.stat().st_mtime_ns for p in shar_dir.iterdir()} == stamps
    assert gzip.decompress((split_out(tmp_path) / "cuts.jsonl.gz").read_bytes()) == cuts_before
    assert second["rows"] == first["rows"]

    # an interrupted shard (no marker) is redone, the others are not
    (split_out(tmp_path) / ".shards" / "000001.json").unlink()
    assert prepare_corpus(cfg)["splits"]["train"]["shards"] == {"total": 3, "reused": 2, "written": 1}

    # new rows at the end only add shards
    write_lines(
        manifest, rows + [{"audio_filepath": "audio/long.flac", "offset": 7.0, "duration": 1.0, "text": "one more"}]
    )
    third = prepare_corpus(cfg)["splits"]["train"]
    assert third["shards"] == {"total": 4, "reused": 3, "written": 1}
    assert third["rows"]["kept"] == 7
    assert len(CutSet.from_shar(in_dir=shar_dir).to_eager()) == 7

    # changed settings redo everything
    changed = make_cfg(tmp_path, {"train": [str(manifest)]}, "shar.shard_size=2", "filters.max_duration=20")
    assert prepare_corpus(changed)["splits"]["train"]["shards"]["written"] == 4


def test_parts_then_merge_equal_one_run(tmp_path):
    """What a job array does (slurm/): each part writes its range of shards, a last run merges them."""
    tone(tmp_path / "audio" / "long.flac", 12.0)
    rows = [
        {"audio_filepath": "audio/long.flac", "offset": float(i), "duration": 1.0, "text": f"segment number {i}"}
        for i in range(5)
    ] + [{"audio_filepath": "audio/missing.flac", "duration": 1.0, "text": "no audio"}]
    manifest = write_lines(tmp_path / "train.jsonl", rows)
    outputs = {}
    for name, parts in (("one", [None]), ("parts", [0, 1, 2, None])):
        args = ["shar.shard_size=2", f"out_root={tmp_path / name}"]
        for index in parts:
            part = [] if index is None else [f"part.index={index}", "part.count=3"]
            summary = prepare_corpus(make_cfg(tmp_path, {"train": [str(manifest)]}, *args, *part))
            if index is not None:
                assert summary["splits"]["train"]["shards"]["mine"] == [index]
                assert not (tmp_path / name / "c" / "train" / "cuts.jsonl.gz").exists()
        root = tmp_path / name / "c" / "train"
        outputs[name] = (gzip.decompress((root / "cuts.jsonl.gz").read_bytes()), (root / "rejects.jsonl").read_text())
    assert summary["splits"]["train"]["shards"] == {"total": 3, "reused": 3, "written": 0}
    assert outputs["parts"] == outputs["one"]
    assert outputs["one"][1].count("\n") == 1


def test_part_index_outside_count_is_one_line(tmp_path):
    with pytest.raises(DataPrepError, match="part.index=2: give an integer from 0 to part.count - 1 = 1"):
        prepare_corpus(
            make_cfg(tmp_path, {"train": [str(write_lines(tmp_path / "t.jsonl", []))]}, "part.index=2", "part.count=2")
        )


# ------------------------------------------------------------------------------------------ duration bins


def test_duration_bins_from_prepared_data(tmp_path):
    tone(tmp_path / "audio" / "long.flac", 60.0)
    rows, t = [], 0.0
    for i in range(24):
        d = 0.5 + (i % 6) * 0.5
        rows.append({"audio_filepath": "audio/long.flac", "offset": t, "duration": d, "text": f"utterance {i}"})
        t += d
    cfg = make_cfg(tmp_path, {"train": [str(write_lines(tmp_path / "train.jsonl", rows))]}, "bins.num_buckets=4")
    summary = prepare_corpus(cfg)["splits"]["train"]
    bins = yaml.safe_load((split_out(tmp_path) / "duration_bins.yaml").read_text())
    assert bins == summary["duration_bins"]
    assert len(bins) == 3 and bins == sorted(bins) and 0.5 < bins[0] and bins[-1] <= 3.0


# --------------------------------------------------------------------------------- stops before any work


def test_missing_input_file_stops_before_any_work(tmp_path):
    good = write_lines(tmp_path / "train.jsonl", [{"audio_filepath": "a.wav", "text": "x"}])
    cfg = make_cfg(tmp_path, {"train": [str(good)], "dev": [str(tmp_path / "missing.jsonl")]})
    with pytest.raises(DataPrepError, match=r"input manifest \(corpus.splits.dev\[0\]\) not found: .*missing.jsonl"):
        prepare_corpus(cfg)
    assert not (tmp_path / "out").exists()


def test_unreadable_input_file_stops(tmp_path):
    broken = tmp_path / "train.jsonl.gz"
    broken.write_bytes(b"this is not gzip data")
    with pytest.raises(DataPrepError, match="cannot be read"):
        prepare_corpus(make_cfg(tmp_path, {"train": [str(broken)]}))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("text.policy=shout", "text.policy=shout: not one of pnc, lower_strip"),
        ("filters.min_duration=50", "filters.min_duration=50: must be below filters.max_duration=40"),
        ("shar.audio_format=ogg", "shar.audio_format=ogg: not one of flac, wav"),
        ("shar.shard_size=0", "shar.shard_size=0: give an integer >= 1"),
        ("tokenizer=/nonexistent/tokenizer.model", "tokenizer=/nonexistent/tokenizer.model: not found"),
        ("corpus.language=${oc.env:NO_SUCH_VARIABLE_HERE}", "corpus.language: cannot be resolved"),
    ],
)
def test_config_errors_stop_with_one_message(tmp_path, override, message):
    good = write_lines(tmp_path / "train.jsonl", [{"audio_filepath": "a.wav", "text": "x"}])
    with pytest.raises(DataPrepError, match=message):
        prepare_corpus(make_cfg(tmp_path, {"train": [str(good)]}, override))
    assert not (tmp_path / "out").exists()


def test_command_line_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep",
            "corpus=demo_general",
            f"out_root={tmp_path / 'out'}",
            f"corpus.splits.train=[{tmp_path / 'missing.jsonl'}]",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [
        f"data_prep: error: input manifest (corpus.splits.train[0]) not found: {tmp_path / 'missing.jsonl'}"
    ]


# ---------------------------------------------------------------------------------------- tokenizer tool


def test_train_domain_tokenizer_warns(tmp_path, caplog):
    rows = [
        {"audio_filepath": "audio/long.flac", "offset": float(i), "duration": 1.0, "text": f"domain words {i}"}
        for i in range(5)
    ]
    tone(tmp_path / "audio" / "long.flac", 6.0)
    prepare_corpus(make_cfg(tmp_path, {"train": [str(write_lines(tmp_path / "train.jsonl", rows))]}))
    cfg = compose_config(
        CONF / "data_prep",
        "tokenizer",
        [f"cuts=[{split_out(tmp_path) / 'cuts.jsonl.gz'}]", f"out_dir={tmp_path / 'tok'}", "vocab_size=20"],
    )
    with caplog.at_level("WARNING"):
        train_domain_tokenizer(cfg)
    assert "re-initialises the RNNT decoder" in caplog.text
    assert load_sentencepiece(tmp_path / "tok").get_piece_size() == 20
