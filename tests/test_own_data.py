"""Users' own data through data preparation: channels of call recordings, NeMo tarred datasets, the audio forms
users have (and 8 kHz telephone audio), the telephone-band augmentation of a replay corpus."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from omegaconf import OmegaConf

from data_prep.audio import on_telephone
from data_prep.demo_corpus.corpus import make_demo_corpus
from data_prep.errors import DataPrepError
from data_prep.prepare import prepare_corpus
from recipes.config import CONF, compose_config
from recipes.transcribe.run import transcribe
from tests.support.models import BASE_MODEL

# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[tuple[np.ndarray, str]]:
    """Eight eSpeak utterances of the demo corpus, 16 kHz: (audio, text)."""
    out = tmp_path_factory.mktemp("speech")
    manifest = make_demo_corpus(out, seed=5, sizes={"general": {"dev": 8}}, long_recording_fraction=0.0)
    rows = [json.loads(line) for line in manifest["general"]["dev"].read_text().splitlines()]
    return [(sf.read(out / "general" / r["audio_filepath"], dtype="float32")[0], r["text"]) for r in rows]


def prepare(tmp_path: Path, splits: dict, *overrides: str, name: str = "c") -> dict:
    """The real prepare config (demo_general's: lower_strip text), pointed at test inputs; the corpus summary."""
    cfg = compose_config(
        CONF / "data_prep",
        "prepare",
        ["corpus=demo_general", f"corpus.name={name}", f"out_root={tmp_path / 'out'}", "progress=false", *overrides],
    )
    OmegaConf.update(cfg, "corpus.splits", splits, merge=False)
    cfg.long_form = {}  # demo_general's dev streams are built from a split these tests do not have
    return prepare_corpus(cfg)


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def shar_by_text(tmp_path: Path, split: str = "train", name: str = "c") -> dict[str, np.ndarray]:
    cuts = CutSet.from_shar(in_dir=tmp_path / "out" / name / split / "shar")
    return {c.supervisions[0].text: c.load_audio() for c in cuts}


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def rejects(tmp_path: Path, split: str = "train", name: str = "c") -> list[dict]:
    path = tmp_path / "out" / name / split / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def call(speech, path: Path, second_party: bool = True) -> tuple[str, str]:
    """A two-channel call: the agent on channel 0, the customer (or silence) on channel 1, 16-bit WAV."""
    (a, text_a), (b, text_b) = speech[0], speech[1]
    x = np.zeros((len(a) + len(b) + 8000, 2), dtype=np.float32)
    x[: len(a), 0] = a
    if second_party:
        x[len(a) + 8000 :, 1] = b
    sf.write(path, x, 16000, subtype="PCM_16")
    return text_a, text_b


# ---------------------------------------------------------------------------------------------- channels


def test_row_channel_selects_the_channel_and_mix_keeps_the_level(speech, tmp_path):
    text_a, text_b = call(speech, tmp_path / "call.wav")
    call(speech, tmp_path / "one_sided.wav", second_party=False)
    stereo = sf.read(tmp_path / "call.wav", dtype="float32")[0]
    rows = [
        {"audio_filepath": "call.wav", "text": text_a, "channel": 0},  # 1 the agent's side
        {"audio_filepath": "call.wav", "text": text_b, "channel_selector": 1},  # 2 NeMo's field, an index
        {"audio_filepath": "call.wav", "text": "a third party", "channel": 2},  # 3 channel_out_of_range
        {"audio_filepath": "call.wav", "text": "not a channel", "channel": "left"},  # 4 bad_field
        {"audio_filepath": "one_sided.wav", "text": "speech on one side"},  # 5 mix
    ]
    summary = prepare(tmp_path, {"train": [write_rows(tmp_path / "rows.jsonl", rows)]})["splits"]["train"]
    assert {r["line"]: r["reason"] for r in rejects(tmp_path)} == {3: "channel_out_of_range", 4: "bad_field"}
    audio = shar_by_text(tmp_path)
    assert np.allclose(audio[text_a][0], stereo[:, 0], atol=1e-4)
    assert np.allclose(audio[text_b][0], stereo[:, 1], atol=1e-4)
    # The mean of a speaking and a silent channel would be at half level; the mix keeps the speaker's.
    assert rms(audio["speech on one side"]) == pytest.approx(rms(stereo[:, 0]), rel=0.01)
    assert summary["audio"]["channel_selected_hours"] > 0 and summary["audio"]["down_mixed_hours"] > 0
    cuts = {c.supervisions[0].text: c for c in CutSet.from_file(tmp_path / "out/c/train/cuts.jsonl.gz")}
    assert np.allclose(cuts["speech on one side"].load_audio(), audio["speech on one side"], atol=1e-4)


def test_corpus_channel_split_gives_a_cut_per_channel_with_its_transcript(speech, tmp_path):
    text_a, text_b = call(speech, tmp_path / "call.wav")
    stereo = sf.read(tmp_path / "call.wav", dtype="float32")[0]
    rows = [
        {"audio_filepath": "call.wav", "agent_text": text_a, "customer_text": text_b},  # 1: two rows
        {"audio_filepath": "call.wav", "agent_text": "", "customer_text": text_b, "offset": 0.0},  # 2: agent silent
    ]
    manifest = write_rows(tmp_path / "rows.jsonl", rows)
    split = ["corpus.channel=split", "corpus.channel_text_fields=[agent_text,customer_text]"]
    summary = prepare(tmp_path, {"train": [manifest]}, *split, "filters.dedupe=false")["splits"]["train"]
    assert summary["rows"] == {"in": 4, "kept": 3, "rejected": 1}
    assert [(r["line"], r["reason"]) for r in rejects(tmp_path)] == [(2, "empty_text")]
    cuts = CutSet.from_shar(in_dir=tmp_path / "out/c/train/shar")
    by_channel = {}
    for cut in cuts:
        by_channel.setdefault(cut.supervisions[0].text, []).append(cut.load_audio()[0])
    assert len(by_channel[text_a]) == 1 and np.allclose(by_channel[text_a][0], stereo[:, 0], atol=1e-4)
    assert all(np.allclose(x, stereo[:, 1], atol=1e-4) for x in by_channel[text_b]) and len(by_channel[text_b]) == 2

    prepare(tmp_path, {"train": [manifest]}, "corpus.channel=1", "corpus.text_field=customer_text", name="one")
    (only,) = shar_by_text(tmp_path, name="one").values()  # line 2 repeats line 1's segment: a duplicate
    assert np.allclose(only[0], stereo[:, 1], atol=1e-4)

    with pytest.raises(DataPrepError, match="channel_text_fields"):
        prepare(tmp_path, {"train": [manifest]}, "corpus.channel=split")


# ------------------------------------------------------------------------------------------ audio forms


FORMS = {  # name: (file, sample rate, soundfile subtype, lossless)
    "pcm16": ("pcm16.wav", 16000, "PCM_16", True),
    "pcm24": ("pcm24.wav", 16000, "PCM_24", True),
    "float": ("float.wav", 16000, "FLOAT", True),
    "mulaw": ("mulaw.wav", 8000, "ULAW", False),
    "telephone": ("telephone.wav", 8000, "PCM_16", False),
    "flac": ("flac.flac", 22050, "PCM_16", True),
    "opus": ("opus.opus", 48000, "OPUS", False),
    "vorbis": ("vorbis.ogg", 44100, "VORBIS", False),
    "mp3": ("mp3.mp3", 16000, "MPEG_LAYER_III", False),
    "stereo": ("stereo.wav", 44100, "PCM_16", True),
}


def resampled(x: np.ndarray, rate: int) -> np.ndarray:
    return np.interp(np.arange(int(len(x) * rate / 16000)) * 16000 / rate, np.arange(len(x)), x).astype(np.float32)


def write_forms(speech, folder: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Every form from one utterance each ({name: (16 kHz reference, text)}), and a long recording of three
    utterances that rows point into with offsets."""
    folder.mkdir()
    refs = {}
    for (name, (file, rate, subtype, _)), (audio, text) in zip(FORMS.items(), speech * 2):
        x = resampled(audio, rate)
        if name == "stereo":  # the same speech on both channels, one quieter: a mean would lower it
            x = np.stack([x, 0.5 * x], axis=1)
        sf.write(folder / file, x, rate, subtype=subtype, format="OGG" if subtype in ("OPUS", "VORBIS") else None)
        refs[name] = (audio, f"{name} {text}")
    return refs


def test_every_audio_form_becomes_16_khz_mono(speech, tmp_path):
    refs = write_forms(speech, tmp_path / "audio")
    long = np.concatenate([np.concatenate([a, np.zeros(4000, np.float32)]) for a, _ in speech[:3]])
    sf.write(tmp_path / "audio/long.flac", long, 16000)
    rows = [{"audio_filepath": f"audio/{FORMS[n][0]}", "text": text} for n, (_, text) in refs.items()]
    start = 0.0
    for i, (audio, text) in enumerate(speech[:3]):  # segments of the long recording
        rows.append(
            {
                "audio_filepath": "audio/long.flac",
                "offset": start,
                "duration": len(audio) / 16000,
                "text": f"long {i} {text}",
            }
        )
        start += (len(audio) + 4000) / 16000
    summary = prepare(tmp_path, {"train": [write_rows(tmp_path / "rows.jsonl", rows)]})["splits"]["train"]
    assert rejects(tmp_path) == [] and summary["rows"]["kept"] == len(rows)

    shar = shar_by_text(tmp_path)
    for name, (reference, text) in refs.items():
        audio = shar[text.lower()]
        assert audio.shape[0] == 1 and abs(audio.shape[1] - len(reference)) <= 0.06 * 16000, name
        level = rms(audio) / rms(reference)
        assert 0.7 < level < 1.3, f"{name}: level {level:.2f} of the original"
        if FORMS[name][3]:  # lossless: the same waveform, through resampling
            n = min(len(reference), audio.shape[1])
            assert np.corrcoef(audio[0, :n], reference[:n])[0, 1] > 0.98, name
    for i, (audio, text) in enumerate(speech[:3]):
        assert np.allclose(shar[f"long {i} {text}"][0], audio, atol=1e-3)

    telephone = sum(len(refs[n][0]) for n in ("mulaw", "telephone")) / 16000 / 3600
    assert summary["audio"]["hours_by_source_rate"]["8000"] == pytest.approx(telephone, abs=2e-4)
    assert summary["audio"]["upsampled_hours"] >= summary["audio"]["hours_by_source_rate"]["8000"]
    assert "upsampled" in summary["audio"]["policy"]
    corpus = json.loads((tmp_path / "out/c/summary.json").read_text())
    assert corpus["audio"]["hours_by_source_rate"] == summary["audio"]["hours_by_source_rate"]

    # recipes.transcribe reads the same forms (and the long recording, by offset, from the manifest)
    cfg = OmegaConf.load(CONF / "transcribe.yaml")
    cfg.update({"model": str(BASE_MODEL), "audio": str(tmp_path / "rows.jsonl"), "progress": False})
    cfg.output = str(tmp_path / "transcripts.jsonl")
    transcribe(cfg)
    lines = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    assert len(lines) == len(rows) and not [line for line in lines if "error" in line or not line["text"]]
    for line, row in zip(lines, rows):
        assert line["offset"] == row.get("offset", 0.0)
        if "duration" in row:
            assert line["duration"] == pytest.approx(row["duration"], abs=1e-3)


def test_telephone_band_augmentation_of_a_replay_corpus(speech, tmp_path):
    rows = []
    for i, (audio, text) in enumerate(speech):
        sf.write(tmp_path / f"{i}.wav", audio + 0.01 * np.random.default_rng(i).standard_normal(len(audio)), 16000)
        rows.append({"audio_filepath": f"{i}.wav", "text": text})
    manifest = write_rows(tmp_path / "rows.jsonl", rows)
    summary = prepare(tmp_path, {"train": [manifest]}, "augment.telephone=0.5")["splits"]["train"]
    cuts = list(CutSet.from_file(tmp_path / "out/c/train/cuts.jsonl.gz"))
    chosen = {c.supervisions[0].text for c in cuts if on_telephone(c.id, 0.5)}
    assert 0 < len(chosen) < len(cuts)
    assert summary["audio"]["telephone"]["hours"] == pytest.approx(
        sum(c.duration for c in cuts if c.supervisions[0].text in chosen) / 3600, abs=1e-4
    )
    for text, audio in shar_by_text(tmp_path).items():
        spectrum = np.abs(np.fft.rfft(audio[0])) ** 2
        high = spectrum[int(len(spectrum) * 4200 / 8000) :].sum() / spectrum.sum()
        assert (high < 0.01) == (text in chosen), f"{text}: {high:.3f} of the energy above 4.2 kHz"

    default = prepare(tmp_path, {"train": [manifest]}, name="off")["splits"]["train"]
    assert default["audio"]["telephone"] == {"share": 0.0, "hours": 0.0}


# ---------------------------------------------------------------------------------------- tarred input


def nemo_tarred(manifest: Path, out: Path, num_shards: int) -> None:
    """What NeMo's ``convert_to_tarred_audio_dataset.py`` writes (its defaults: whole files as members,
    ``slice_with_offset`` off; ``--sort_in_shards``): ``audio_<i>.tar``, ``sharded_manifests/manifest_<i>.json``,
    ``tarred_audio_manifest.json`` (every row with ``shard_id``). A member is named after the source path with
    ``/`` and ``.`` squashed to ``_``; a recording already in the shard is not stored again, and its later rows are
    named ``<name>-sub<n>.<ext>`` (with their offsets)."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    per_shard = len(rows) // num_shards  # NeMo drops the rows left over
    (out / "sharded_manifests").mkdir(parents=True)
    everything = []
    for shard in range(num_shards):
        entries = sorted(rows[shard * per_shard : (shard + 1) * per_shard], key=lambda r: r["duration"])
        written, count = [], {}
        with tarfile.open(out / f"audio_{shard}.tar", "w") as tar:
            for entry in entries:
                path = os.path.abspath(manifest.parent / entry["audio_filepath"])
                base, ext = os.path.splitext(path)
                base = base.replace("/", "_").replace(".", "_")
                if base + ext not in count:
                    tar.add(path, arcname=base + ext)
                    name, count[base + ext] = base + ext, 1
                else:
                    name = f"{base}-sub{count[base + ext]}{ext}"
                    count[base + ext] += 1
                written.append({**entry, "audio_filepath": name, "shard_id": shard})
        write_rows(out / "sharded_manifests" / f"manifest_{shard}.json", written)
        everything += written
    write_rows(out / "tarred_audio_manifest.json", everything)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A demo corpus of 12 rows, half of them segments of long recordings (offsets), as plain NeMo JSONL."""
    out = tmp_path_factory.mktemp("corpus")
    make_demo_corpus(out, seed=9, sizes={"general": {"train": 12}}, long_recording_fraction=0.5)
    return out / "general" / "train.jsonl"


def test_nemo_tarred_input_gives_the_cuts_of_the_plain_manifest(corpus, tmp_path):
    from nemo.collections.common.data.lhotse.nemo_adapters import LazyNeMoTarredIterator

    tarred = tmp_path / "tarred"
    nemo_tarred(corpus, tarred, num_shards=3)
    assert any("-sub" in line for line in (tarred / "tarred_audio_manifest.json").read_text().splitlines())
    sharded = str(tarred / "sharded_manifests" / "manifest__OP_0..2_CL_.json")
    tars = str(tarred / "audio__OP_0..2_CL_.tar")
    # NeMo's own reader takes these files: they follow its conventions
    assert len(list(CutSet(LazyNeMoTarredIterator(manifest_path=sharded, tar_paths=tars)))) == 12

    plain = prepare(tmp_path, {"train": [str(corpus)]}, name="plain")
    inputs = {
        "sharded": {"path": sharded, "tar": tars},
        "one_manifest": {"path": str(tarred / "tarred_audio_manifest.json"), "tar": tars},
    }
    expected = shar_by_text(tmp_path, name="plain")
    for name, spec in inputs.items():
        summary = prepare(tmp_path, {"train": [spec]}, "shar.shard_size=100", name=name)
        split = summary["splits"]["train"]
        assert split["rows"] == plain["splits"]["train"]["rows"] and split["hours"] == plain["splits"]["train"]["hours"]
        assert split["shards"]["total"] == 3  # one per tar file: a job array's part reads its own tar files
        got = shar_by_text(tmp_path, name=name)
        assert got.keys() == expected.keys()
        assert all(np.array_equal(got[text], expected[text]) for text in expected), name
    # cuts.jsonl.gz reads a tar member with tar (no copy of the audio): the same samples, offsets included
    for cut in CutSet.from_file(tmp_path / "out/sharded/train/cuts.jsonl.gz"):
        assert np.array_equal(cut.load_audio(), expected[cut.supervisions[0].text]), cut.id


def test_broken_tarred_rows_are_rejected_with_their_reason(corpus, tmp_path):
    tarred = tmp_path / "tarred"
    nemo_tarred(corpus, tarred, num_shards=1)
    rows = [json.loads(line) for line in (tarred / "tarred_audio_manifest.json").read_text().splitlines()]
    with tarfile.open(tarred / "audio_0.tar", "a") as tar:
        garbage = tmp_path / "garbage.wav"
        garbage.write_bytes(b"not audio " * 100)
        tar.add(garbage, arcname="garbage.wav")
    whole = next(r for r in rows if "offset" not in r)
    broken = [
        {**whole, "audio_filepath": "not_in_the_tar.wav"},  # audio_missing
        {**whole, "audio_filepath": "garbage.wav"},  # audio_unreadable
        {**whole, "shard_id": 7},  # bad_field: no such tar shard
    ]
    manifest = write_rows(tarred / "with_broken_rows.json", rows + broken)
    summary = prepare(tmp_path, {"train": [{"path": manifest, "tar": str(tarred / "audio_0.tar")}]})
    reasons = {r["line"]: r["reason"] for r in rejects(tmp_path)}
    n = len(rows)
    assert reasons == {n + 1: "audio_missing", n + 2: "audio_unreadable", n + 3: "bad_field"}
    assert summary["splits"]["train"]["rows"] == {"in": n + 3, "kept": n, "rejected": 3}

    with pytest.raises(DataPrepError, match="no such file"):
        prepare(tmp_path, {"train": [{"path": manifest, "tar": str(tarred / "audio__OP_0..1_CL_.tar")}]})


# ------------------------------------------------------------------------------------- the worked example


def test_worked_example_configs_train_on_the_long_turns(demo_workdir, tmp_path, monkeypatch):
    """docs/own_data.md's configs on a synthetic call corpus of the example's shape: every turn prepared from its
    speaker's channel at 8 kHz, the replay corpus partly through the phone channel, the blend, and the data config's
    train_ds read by NeMo's own dataloader, which passes the 20-40 s turns that demo_target's max_duration drops."""
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config

    from data_prep.blend import write_blend
    from scripts.make_example_calls import make_example_calls

    shutil.copytree(demo_workdir / "data" / "demo_corpus", tmp_path / "data" / "demo_corpus")
    shutil.copytree(demo_workdir / "data" / "prepared" / "demo_general", tmp_path / "data/prepared/demo_general")
    monkeypatch.chdir(tmp_path)
    make_example_calls(Path("data/example_calls"), {"train": 3, "dev": 1}, seed=1)
    calls = prepare_corpus(compose_config(CONF / "data_prep", "prepare", ["corpus=example_calls", "progress=false"]))
    rows = [json.loads(line) for line in Path("data/example_calls/train.jsonl").read_text().splitlines()]
    assert calls["splits"]["train"]["rows"]["kept"] == len(rows) and calls["rows"]["rejected"] == 0
    assert calls["audio"]["upsampled_hours"] == calls["audio"]["channel_selected_hours"] == calls["hours"]["kept"]
    replay = prepare_corpus(compose_config(CONF / "data_prep", "prepare", ["corpus=example_replay", "progress=false"]))
    assert 0 < replay["audio"]["telephone"]["hours"] < replay["hours"]["kept"]
    write_blend(compose_config(CONF / "data_prep", "blend", ["blend=example_calls_replay", "num_buckets=4"]))

    long_turns = {r["text"] for r in rows if r["duration"] > 20}
    assert long_turns, "the synthetic corpus has turns of 20-40 s"
    finetune = compose_config(
        CONF, "finetune", ["experiment=demo_finetune", "data=example_calls", "data.blend_weights=null"]
    )
    assert finetune.data.train_ds.max_duration >= max(r["duration"] for r in rows)
    train_ds = OmegaConf.create(OmegaConf.to_container(finetune.data.train_ds, resolve=True))
    train_ds.update({"num_workers": 0, "seed": 0, "shard_seed": 0, "concurrent_bucketing": False})
    train_ds.update({"bucket_buffer_size": 50, "shuffle_buffer_size": 50})

    class Identity:
        def __getitem__(self, cuts):
            return cuts

    loader = get_lhotse_dataloader_from_config(train_ds, global_rank=0, world_size=1, dataset=Identity())
    seen, corpora = set(), set()
    for _, batch in zip(range(40), loader):
        for cut in batch:
            seen.add(cut.supervisions[0].text)
            corpora.add(cut.corpus)
    assert corpora == {"example_calls", "example_replay"} and seen & long_turns
    for path in (finetune.data.validation_ds.cuts_path, *finetune.data.dev_sets.values()):
        assert Path(path).is_file(), path
