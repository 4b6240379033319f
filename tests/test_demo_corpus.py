"""The embedded demo corpus: deterministic, well-formed, two distinct domains."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.demo_corpus import corpus as demo_corpus
from data_prep.demo_corpus import speech
from data_prep.demo_corpus.corpus import make_demo_corpus
from data_prep.demo_corpus.texts import NUMBER_WORDS, sample_texts
from recipes.config import CONF, compose_config

TINY = {"general": {"train": 8, "dev": 3}, "target": {"train": 6, "dev": 3}}
WORDS = re.compile(r"[a-z']+( [a-z']+)*")


def read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_a")
    # Half of the utterances in long recordings, so that a tiny corpus has some.
    manifests = make_demo_corpus(out, seed=7, sizes=TINY, long_recording_fraction=0.5, num_workers=2)
    return out, manifests


def test_same_seed_gives_identical_files_whatever_the_workers(corpus, tmp_path):
    out, manifests = corpus
    again = make_demo_corpus(tmp_path, seed=7, sizes=TINY, long_recording_fraction=0.5, num_workers=1)
    assert {d: {s: p.relative_to(tmp_path) for s, p in m.items()} for d, m in again.items()} == {
        d: {s: p.relative_to(out) for s, p in m.items()} for d, m in manifests.items()
    }
    first, second = tree(out), tree(tmp_path)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_manifests_match_the_audio(corpus):
    out, manifests = corpus
    for domain, splits in TINY.items():
        for split, size in splits.items():
            manifest = manifests[domain][split]
            assert manifest == out / domain / f"{split}.jsonl"
            rows = read_manifest(manifest)
            assert len(rows) == size
            segments = defaultdict(list)
            for row in rows:
                assert set(row) <= {"audio_filepath", "duration", "text", "offset"}
                assert row["audio_filepath"].startswith(f"audio/{split}/")
                info = sf.info(manifest.parent / row["audio_filepath"])
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                file_s = info.frames / info.samplerate
                if "offset" in row:
                    segments[row["audio_filepath"]].append((row["offset"], row["duration"]))
                    assert 0.0 <= row["offset"] and row["offset"] + row["duration"] <= file_s + 1e-9
                else:
                    assert row["duration"] == pytest.approx(file_s, abs=1e-9)
                assert 1.0 < row["duration"] < 7.0
            assert segments, f"{domain}/{split} has no long recordings"
            for spans in segments.values():
                assert len(spans) >= 2
                ends = [offset + duration for offset, duration in sorted(spans)]
                starts = [offset for offset, _ in sorted(spans)]
                assert all(end <= start for end, start in zip(ends, starts[1:])), "segments overlap"


def test_audio_is_speech_plus_light_noise(corpus):
    _, manifests = corpus
    for row in read_manifest(manifests["general"]["train"]):
        audio, rate = sf.read(manifests["general"]["train"].parent / row["audio_filepath"], dtype="float64")
        start = round(row.get("offset", 0.0) * rate)
        audio = audio[start : start + round(row["duration"] * rate)]
        frames = audio[: audio.size // 320 * 320].reshape(-1, 320)  # 20 ms
        energy = np.mean(frames**2, axis=1)
        assert 0.05 < np.abs(audio).max() < 1.0
        # Every utterance starts with at least 50 ms of silence: noise only, neither digital zero nor loud.
        loud_to_noise_db = 10 * np.log10(np.sort(energy)[-len(energy) // 4 :].mean() / energy[0])
        assert energy[0] > 0.0 and 10.0 < loud_to_noise_db < 50.0


def test_texts_are_lowercase_words_and_dev_is_unseen(corpus):
    _, manifests = corpus
    for splits in manifests.values():
        texts = {split: [row["text"] for row in read_manifest(path)] for split, path in splits.items()}
        assert all(WORDS.fullmatch(t) for ts in texts.values() for t in ts)
        assert not set(texts["dev"]) & set(texts["train"])


def test_target_vocabulary_is_mostly_new():
    rng = np.random.default_rng(0)
    general = {w for t in sample_texts("general", 2000, rng) for w in t.split()}
    target = {w for t in sample_texts("target", 1000, rng) for w in t.split()} - set(NUMBER_WORDS)
    assert 150 <= len(general) <= 250
    assert len(target) >= 60
    assert len(target & general) / len(target) < 0.1


def test_plan_uses_several_voices():
    rng = np.random.default_rng(0)
    recordings = demo_corpus.plan_split(
        sample_texts("general", 40, rng),
        Path("unused"),
        rng,
        voices=speech.DEFAULT_VOICES,
        variants=speech.DEFAULT_VARIANTS,
        rate_wpm=(140, 190),
        pitch=(30, 70),
        snr_db=(20, 35),
        silence_s=(0.05, 0.3),
        long_recording_fraction=0.2,
        session_size=(3, 6),
        session_gap_s=(0.1, 0.5),
        sample_rate=16000,
        prefix="train",
    )
    utterances = [u for rec in recordings for u in rec.utterances]
    assert sorted(u.index for u in utterances) == list(range(40))
    assert len({u.voice.split("+")[0] for u in utterances}) >= 4
    assert len({u.voice for u in utterances}) >= 10
    assert len({u.rate_wpm for u in utterances}) >= 10
    assert sum(len(rec.utterances) for rec in recordings if rec.is_session) == 8


def test_other_seed_gives_other_texts_through_the_config(corpus, tmp_path):
    _, manifests = corpus
    cfg = compose_config(
        CONF / "data_prep",
        "demo_corpus",
        [
            f"out_dir={tmp_path}",
            "seed=8",
            "num_workers=1",
            "domains.general.train=5",
            "domains.general.dev=2",
            "domains.target.train=5",
            "domains.target.dev=2",
        ],
    )
    other = demo_corpus.run(cfg)
    for domain in TINY:
        ours = [row["text"] for row in read_manifest(other[domain]["train"])]
        theirs = [row["text"] for row in read_manifest(manifests[domain]["train"])]
        assert len(ours) == 5 and ours != theirs[:5]


def test_unknown_voices_are_refused():
    speech.check_voices(speech.DEFAULT_VOICES, speech.DEFAULT_VARIANTS)
    with pytest.raises(ValueError) as refused:
        speech.check_voices(["en-us", "en-xx"], ["", "m3", "nosuchvariant"])
    assert "en-xx" in str(refused.value) and "nosuchvariant" in str(refused.value)
    assert "en-us" not in str(refused.value) and "m3" not in str(refused.value)
