"""``python -m recipes.transcribe``: the streaming engine's transcripts of files, folders and manifests, with token
times, one line per channel on request, captions, errors as lines, and memory that does not grow with the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, Recording, SupervisionSegment, fastcopy
from omegaconf import OmegaConf

from data_prep.demo_corpus.corpus import make_demo_corpus
from recipes.config import CONF
from recipes.evaluate.run import evaluate_model, show_partials
from recipes.evaluate.wer import word_error_rates
from recipes.model_files import load_model
from recipes.transcribe.run import transcribe
from tests.support.models import BASE_MODEL
from tests.support.runs import run_cli

LOOKAHEAD = [70, 6]  # 560 ms


@pytest.fixture(scope="module")
def model():
    return load_model(str(BASE_MODEL))


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, tuple[np.ndarray, str]]:
    """Eight general-domain utterances of the demo corpus (the demo model knows that domain): {name: (16 kHz
    audio, text)}."""
    out = tmp_path_factory.mktemp("speech")
    manifest = make_demo_corpus(out, seed=11, sizes={"general": {"dev": 8}}, long_recording_fraction=0.0)
    rows = [json.loads(line) for line in manifest["general"]["dev"].read_text().splitlines()]
    return {
        Path(r["audio_filepath"]).stem: (sf.read(out / "general" / r["audio_filepath"], dtype="float32")[0], r["text"])
        for r in rows
    }


def config(tmp_path: Path, audio, *overrides: str):
    """``conf/transcribe.yaml`` as the command composes it, with ``key=value`` overrides."""
    cfg = OmegaConf.load(CONF / "transcribe.yaml")
    cfg.update({"model": str(BASE_MODEL), "audio": str(audio), "output": str(tmp_path / "out.jsonl")})
    cfg.update({"lookahead": LOOKAHEAD, "progress": False})
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, int(value) if value.isdigit() else value)
    return cfg


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def two_channel_call(speech, path: Path) -> tuple[str, str]:
    """A stereo file with a different utterance on each channel (one party per channel, as a call)."""
    (a, text_a), (b, text_b) = list(speech.values())[:2]
    stereo = np.zeros((max(len(a), len(b)) + 8000, 2), dtype=np.float32)
    stereo[: len(a), 0], stereo[4000 : 4000 + len(b), 1] = a, b
    sf.write(path, stereo, 16000, subtype="PCM_16")
    return text_a, text_b


def test_text_equals_the_streaming_hypothesis_of_recipes_evaluate(model, speech, tmp_path):
    """Files (16 kHz, 44.1 kHz FLAC, and one longer than a feature block, so read block by block) against
    ``recipes.evaluate audio=``; a prepared cuts manifest against ``recipes.evaluate data=``."""
    folder = tmp_path / "audio"
    folder.mkdir()
    names = list(speech)
    sf.write(folder / "a.wav", speech[names[0]][0], 16000)
    x = speech[names[1]][0]
    resampled = np.interp(np.arange(int(len(x) * 44100 / 16000)) * 16000 / 44100, np.arange(len(x)), x)
    sf.write(folder / "b.flac", resampled.astype(np.float32), 44100)
    pause = np.zeros(16000, dtype=np.float32)
    long = np.concatenate([part for name in names for part in (speech[name][0], pause)] * 2)
    assert len(long) > 30 * 16000  # past BLOCK_SECONDS: features come block by block
    sf.write(folder / "long.wav", long, 16000)

    cfg = config(tmp_path, folder)
    summary = transcribe(cfg, model)
    lines = {Path(line["audio_filepath"]).name: line for line in read_lines(tmp_path / "out.jsonl")}
    assert summary["lines"] == 3 and summary["errors"] == 0
    for name, line in lines.items():
        expected = show_partials(model, folder / name, [LOOKAHEAD], write=lambda _: None)["560ms"]
        assert line["text"] == expected, name
        assert line["text"] and line["lookahead_ms"] == 560

    cuts = tmp_path / "cuts.jsonl.gz"
    recordings = [Recording.from_file(folder / name, recording_id=name) for name in ("a.wav", "b.flac")]
    CutSet.from_cuts(
        fastcopy(cut, supervisions=[SupervisionSegment(cut.id, cut.recording_id, 0, cut.duration, text="-")])
        for cut in (r.to_cut().resample(16000) for r in recordings)
    ).to_file(cuts)
    report = evaluate_model(model, {"set": str(cuts)}, [LOOKAHEAD], batch_size=4)
    expected = {u["id"]: u["hyp"] for u in report["sets"]["set"]["560ms"]["utterances"]}
    transcribe(config(tmp_path, cuts), model)
    assert {line["id"]: line["text"] for line in read_lines(tmp_path / "out.jsonl")} == expected


def test_block_features_equal_the_features_of_the_whole_recording(model, speech, tmp_path):
    """Features computed 30 s at a time, read chunk by chunk as the engine reads them, are the whole recording's
    exactly (44.1 kHz stereo: resampled and down-mixed block by block too)."""
    from recipes.streaming.engine import StreamingRecognizer
    from recipes.transcribe.audio import file_cut, on_channel
    from recipes.transcribe.features import BlockFeatures

    parts = [np.concatenate([audio, np.zeros(8000, np.float32)]) for audio, _ in speech.values()] * 4
    x = np.concatenate(parts)
    x = np.interp(np.arange(int(len(x) * 44100 / 16000)) * 16000 / 44100, np.arange(len(x)), x)
    sf.write(tmp_path / "long.wav", np.stack([x, 0.3 * x[::-1]], axis=1).astype(np.float32), 44100)
    audio = on_channel(file_cut(str(tmp_path / "long.wav")), "mix")
    assert audio.num_samples > 2 * 30 * 16000  # three blocks at least
    recognizer = StreamingRecognizer(model)
    whole = recognizer.features([audio.read(0, audio.num_samples)])[0]
    blocks = BlockFeatures(audio, recognizer)
    assert (blocks.size(0), blocks.size(1)) == tuple(whole.shape)
    read, start = [], 0
    while start < whole.size(1):  # chunks of 56 frames with 9 frames of history, as a 560 ms stream reads them
        read.append(blocks[:, max(0, start - 9) : start + 56][:, start - max(0, start - 9) :])
        start += 56
    assert torch.equal(torch.cat(read, dim=1), whole)


def test_token_times_increase_and_fall_inside_the_audio(model, speech, tmp_path):
    manifest = tmp_path / "in.jsonl"
    rows = []
    for name, (audio, text) in speech.items():
        sf.write(tmp_path / f"{name}.wav", audio, 16000)
        rows.append({"audio_filepath": f"{name}.wav", "duration": len(audio) / 16000, "text": text})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    transcribe(config(tmp_path, manifest), model)
    lines = read_lines(tmp_path / "out.jsonl")
    assert len(lines) == len(rows)
    wer = word_error_rates([r["text"] for r in rows], [line["text"] for line in lines])["wer"]
    assert wer < 0.4  # the demo model knows this domain: the transcripts are the speech
    for line in lines:
        times = line["token_start_s"]
        assert len(times) == len(line["tokens"]) > 0
        assert times == sorted(times) and 0 <= times[0] and times[-1] < line["duration"]


def test_two_channel_file_gives_two_transcripts(model, speech, tmp_path):
    text_a, text_b = two_channel_call(speech, tmp_path / "call.wav")
    transcribe(config(tmp_path, tmp_path / "call.wav", "channel=each"), model)
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["channel"] for line in lines] == [0, 1]
    assert word_error_rates([text_a], [lines[0]["text"]])["wer"] < 0.5
    assert word_error_rates([text_b], [lines[1]["text"]])["wer"] < 0.5
    # recipes.evaluate audio= hears the same channels
    finals = show_partials(model, tmp_path / "call.wav", [LOOKAHEAD], channel="each", write=lambda _: None)
    assert finals == {"560ms/ch0": lines[0]["text"], "560ms/ch1": lines[1]["text"]}

    transcribe(config(tmp_path, tmp_path / "call.wav", "channel=1"), model)
    assert [(line["channel"], line["text"]) for line in read_lines(tmp_path / "out.jsonl")] == [(1, lines[1]["text"])]


def test_unreadable_files_are_lines_with_their_reason(model, speech, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    audio = next(iter(speech.values()))[0]
    sf.write(folder / "good.wav", audio, 16000)
    (folder / "garbage.wav").write_bytes(b"not audio at all " * 50)
    sf.write(folder / "whole.flac", np.concatenate([audio] * 4), 16000)
    data = (folder / "whole.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 3])
    (folder / "whole.flac").unlink()
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(
        json.dumps({"audio_filepath": "audio/good.wav", "channel": 1})
        + "\n"
        + json.dumps({"audio_filepath": "audio/missing.wav"})
        + "\n"
    )
    summary = transcribe(config(tmp_path, folder), model)
    lines = {Path(line["audio_filepath"]).name: line for line in read_lines(tmp_path / "out.jsonl")}
    assert lines["good.wav"]["text"] and "error" not in lines["good.wav"]
    assert lines["garbage.wav"]["error"].startswith("audio_unreadable")
    truncated = lines["truncated.flac"]
    assert "error" in truncated and truncated["error"].startswith(("audio_unreadable", "audio_undecodable"))
    assert summary["errors"] == 2

    transcribe(config(tmp_path, manifest), model)
    errors = [line["error"].split(":")[0] for line in read_lines(tmp_path / "out.jsonl")]
    assert errors == ["channel_out_of_range", "audio_missing"]


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_captions(model, speech, tmp_path, fmt):
    text_a, _ = two_channel_call(speech, tmp_path / "call.wav")
    transcribe(config(tmp_path, tmp_path / "call.wav", f"captions={fmt}", "channel=0"), model)
    line = read_lines(tmp_path / "out.jsonl")[0]
    captions = (tmp_path / "out_captions" / f"call.ch0.{fmt}").read_text()
    clock = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    times = [(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000) for h, m, s, ms in re.findall(clock, captions)]
    assert times and times == sorted(times) and times[-1] <= line["duration"] + 1e-3
    assert captions.startswith("WEBVTT" if fmt == "vtt" else "1\n")
    spoken = " ".join(t for t in captions.splitlines() if t and not re.search(clock, t) and not t.isdigit())
    assert spoken.replace("WEBVTT", "").split() == line["text"].split()


def _peak_memory(tmp_path: Path, audio: Path) -> tuple[float, dict]:
    output = f"output={tmp_path / (audio.stem + '.jsonl')}"
    args = [f"model={BASE_MODEL}", f"audio={audio}", output, "lookahead=1120", "progress=false"]
    proc = run_cli("recipes.transcribe", args, tmp_path, 600, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = re.search(r"peak memory (\d+) MiB", proc.stderr)
    return float(peak.group(1)), read_lines(tmp_path / (audio.stem + ".jsonl"))[0]


def test_long_file_streams_in_memory_independent_of_its_length(speech, tmp_path):
    """One minute and ten minutes of speech: the longer file needs no more memory (read whole, its samples and
    features alone would take about 60 MB more)."""
    parts = [np.concatenate([audio, np.zeros(8000, np.float32)]) for audio, _ in speech.values()]
    one_minute = np.concatenate(parts * 10)[: 60 * 16000]
    sf.write(tmp_path / "short.flac", one_minute, 16000)
    with sf.SoundFile(tmp_path / "long.flac", "w", 16000, 1) as f:
        for _ in range(10):
            f.write(one_minute)
    short, short_line = _peak_memory(tmp_path, tmp_path / "short.flac")
    long, long_line = _peak_memory(tmp_path, tmp_path / "long.flac")
    assert long_line["duration"] == pytest.approx(600.0) and long_line["text"]
    assert long - short < 20, f"peak memory {short:.0f} MiB for 1 min, {long:.0f} MiB for 10 min"


def test_config_mistakes_are_one_line_each(tmp_path):
    args = [f"model={tmp_path / 'none.nemo'}", f"audio={tmp_path / 'nothing'}", "channel=left", "lookahead=fast"]
    proc = run_cli("recipes.transcribe", args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert [e.split("=")[0] for e in errors] == [
        "recipes.transcribe: error: model",
        "recipes.transcribe: error: audio",
        "recipes.transcribe: error: lookahead",
        "recipes.transcribe: error: channel",
    ]
