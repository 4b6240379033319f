"""The live path, ``python -m recipes.evaluate audio=<file>``: a file read and featurised a block at a time as the
engine's chunks need it gives the partial hypotheses of the whole waveform, and its memory does not grow with the
file's length."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from recipes.config import REPO
from recipes.evaluate.run import show_partials
from recipes.streaming.engine import StreamingRecognizer
from recipes.transcribe.audio import BLOCK_SECONDS
from tests.support.models import BASE_MODEL
from tests.support.runs import subprocess_env
from tests.support.streaming import random_audios

PEAK_RSS = (
    "import resource, runpy, sys\n"
    "sys.argv = ['recipes.evaluate', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('recipes.evaluate', run_name='__main__')\n"
    "finally:\n"
    "    print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_partials_of_a_file_read_block_by_block_are_those_of_the_whole_waveform(random_model, tmp_path):
    audio = random_audios([BLOCK_SECONDS + 4.5], seed=5)[0]
    sf.write(tmp_path / "long.wav", audio, 16000, subtype="FLOAT")
    lines: list[str] = []
    finals = show_partials(random_model, tmp_path / "long.wav", [[70, 13], [70, 6]], write=lines.append)
    recognizer = StreamingRecognizer(random_model, 1)
    for la, key in (([70, 13], "1120ms"), ([70, 6], "560ms")):
        whole = list(recognizer.timed_partials(audio, la))
        assert finals[key] == whole[-1][1] and len(finals[key]) > 100
        shown = [
            f"{heard:7.2f} s | {text}" for k, (heard, text) in enumerate(whole) if k == 0 or text != whole[k - 1][1]
        ]
        header = lines.index(next(line for line in lines if f"lookahead {la}" in line))
        assert lines[header + 1 : header + 1 + len(shown)] == shown


def peak_rss_mib(audio_path, tmp_path) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, f"model={BASE_MODEL}", f"audio={audio_path}", "lookaheads=[[70,13]]"],
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final   |" in proc.stdout
    return int(proc.stderr.split("peak_rss_kib")[-1].split()[0]) / 1024


def test_live_path_memory_does_not_grow_with_the_file(tmp_path):
    """One minute and eight minutes of audio: the same peak memory within 5 % (read whole, the long file's samples
    and features alone would be some 80 MB more)."""
    if not BASE_MODEL.is_file():
        pytest.skip(f"{BASE_MODEL.relative_to(REPO)} is absent (scripts/run_demo.sh stage 3 makes it)")
    minute = (0.05 * np.random.default_rng(6).standard_normal(60 * 16000)).astype(np.float32)
    sf.write(tmp_path / "short.flac", minute, 16000)
    with sf.SoundFile(tmp_path / "long.flac", "w", 16000, 1) as f:
        for _ in range(8):
            f.write(minute)
    short, long = peak_rss_mib(tmp_path / "short.flac", tmp_path), peak_rss_mib(tmp_path / "long.flac", tmp_path)
    assert long < 1.05 * short, f"peak memory {short:.0f} MiB for 1 min, {long:.0f} MiB for 8 min"
