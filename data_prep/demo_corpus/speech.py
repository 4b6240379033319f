"""Speech from eSpeak NG in a helper process, with the voices checked, trimmed, noised and resampled."""

from __future__ import annotations

import atexit
import functools
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.fft import next_fast_len
from scipy.signal import firwin

DEFAULT_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-us-nyc")
# "" keeps the voice's own timbre; the others are files in espeak-ng-data/voices/!v.
DEFAULT_VARIANTS = ("", "m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt")


# --------------------------------------------------------------------------------------------------------
# eSpeak NG (libespeak-ng through ctypes, in a speaker process)
# --------------------------------------------------------------------------------------------------------

# A small stand-alone program (standard library only) that owns libespeak-ng. It initialises the library,
# never speaks itself, and answers each request in a forked child, so that every utterance starts from the
# same library state. Being a fresh lean interpreter keeps each fork cheap (about 1 ms, against 5-10 ms from
# a process holding scipy, or far more from one holding torch) and safe whatever the caller has imported.
# Requests: one JSON object per line on stdin. Replies on stdout: int32 status (0 ok), uint64 length, payload.
_SPEAKER_PROGRAM = r"""
import ctypes, json, os, struct, sys

lib = ctypes.CDLL(sys.argv[1])
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetSynthCallback.argtypes = [CALLBACK]
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
AUDIO_OUTPUT_SYNCHRONOUS, INITIALIZE_DONT_EXIT, POS_CHARACTER, CHARS_UTF8 = 2, 0x8000, 1, 1
RATE, PITCH = 1, 3
out = sys.stdout.buffer


def message(status, payload):
    return struct.pack("<iQ", status, len(payload)) + payload


def speak(req):
    chunks = []

    def on_audio(wav, n_samples, events):
        if wav and n_samples > 0:
            chunks.append(ctypes.string_at(wav, 2 * n_samples))
        return 0

    callback = CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(req["voice"].encode()) != 0:
        raise ValueError("unknown eSpeak voice " + repr(req["voice"]))
    lib.espeak_SetParameter(RATE, req["rate_wpm"], 0)
    lib.espeak_SetParameter(PITCH, req["pitch"], 0)
    # Some variants (f2, whisper, ...) draw on rand(), which is seeded differently in every process.
    lib.espeak_ng_SetRandSeed(req["seed"])
    text = req["text"].encode("utf-8") + b"\0"
    if lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None) != 0:
        raise RuntimeError("espeak_Synth failed on " + repr(req["text"]))
    lib.espeak_Synchronize()
    return b"".join(chunks)


def unknown_voices(req):
    return json.dumps([v for v in req["voices"] if lib.espeak_SetVoiceByName(v.encode()) != 0]).encode()


sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, sys.argv[2].encode(), INITIALIZE_DONT_EXIT)
# Loading a voice reads the English dictionary (~10 ms): once here rather than in every child.
if sample_rate <= 0 or lib.espeak_SetVoiceByName(b"en") != 0:
    out.write(message(1, b"cannot initialise eSpeak with the data at " + sys.argv[2].encode()))
    sys.exit(1)
out.write(message(0, struct.pack("<i", sample_rate)))
out.flush()

handlers = {"speak": speak, "unknown_voices": unknown_voices}
for line in sys.stdin.buffer:
    req = json.loads(line)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            reply = message(0, handlers[req["op"]](req))
        except BaseException as e:
            reply = message(1, repr(e).encode())
        view = memoryview(reply)
        while view:
            view = view[os.write(write_fd, view):]
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        reply = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or len(reply) < 12:
        reply = message(1, ("eSpeak child failed, wait status %d" % status).encode())
    out.write(reply)
    out.flush()
"""


class EspeakSpeaker:
    """Client of a speaker process (see ``_SPEAKER_PROGRAM``) running libespeak-ng from ``espeakng-loader``.
    Same arguments, same samples: the process never speaks twice from the same state."""

    def __init__(self) -> None:
        import espeakng_loader

        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _SPEAKER_PROGRAM,
                espeakng_loader.get_library_path(),
                espeakng_loader.get_data_path(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        (self.sample_rate,) = struct.unpack("<i", self._reply())

    def _reply(self) -> bytes:
        header = self._proc.stdout.read(12)
        if len(header) < 12:
            raise RuntimeError(f"the eSpeak speaker process died (exit code {self._proc.poll()})")
        status, length = struct.unpack("<iQ", header)
        payload = self._proc.stdout.read(length)
        if status != 0:
            raise RuntimeError(payload.decode("utf-8", "replace"))
        return payload

    def _request(self, op: str, **fields) -> bytes:
        self._proc.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self._proc.stdin.flush()
        return self._reply()

    def speak(self, text: str, voice: str, rate_wpm: int, pitch: int, seed: int) -> np.ndarray:
        """``text`` in eSpeak voice ``voice`` (e.g. ``en-us+m3``) at ``rate_wpm`` words per minute and pitch
        ``pitch`` (0-99, 50 is the voice's own), as int16 samples at ``self.sample_rate``."""
        payload = self._request(
            "speak", text=text, voice=voice, rate_wpm=int(rate_wpm), pitch=int(pitch), seed=int(seed)
        )
        return np.frombuffer(payload, dtype=np.int16)

    def unknown_voices(self, voices: Sequence[str]) -> list[str]:
        """The names in ``voices`` that eSpeak cannot select."""
        return json.loads(self._request("unknown_voices", voices=list(voices)))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()
            self._proc.stdout.close()


_speakers: dict[int, EspeakSpeaker] = {}


def shared_speaker() -> EspeakSpeaker:
    """This process's speaker, started on first use and stopped at exit."""
    speaker = _speakers.get(os.getpid())
    if speaker is None:
        speaker = _speakers[os.getpid()] = EspeakSpeaker()
        atexit.register(speaker.close)
    return speaker


def check_voices(voices: Sequence[str], variants: Sequence[str]) -> None:
    """Raise ``ValueError`` naming any voice eSpeak does not know or variant missing from its data.
    (eSpeak silently ignores an unknown ``+variant``, hence the file check.)"""
    import espeakng_loader

    variant_dir = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    missing = [f"+{v}" for v in variants if v and not (variant_dir / v).is_file()]
    missing += shared_speaker().unknown_voices(voices)
    if missing:
        raise ValueError(f"not in eSpeak's data ({variant_dir.parent.parent}): {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------


def trim(x: np.ndarray, rel_threshold: float = 0.01, margin: int = 200) -> np.ndarray:
    """Cut eSpeak's own leading and trailing silence, keeping ``margin`` samples around the speech."""
    loud = np.flatnonzero(np.abs(x) > rel_threshold * np.abs(x).max())
    if loud.size == 0:
        return x
    return x[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-power noise: white and pink (1/f power, shaped in the frequency domain) in a random mixture."""
    white = rng.standard_normal(n)
    n_fft = next_fast_len(n, real=True)  # odd lengths can make the FFT 20x slower
    spectrum = np.fft.rfft(rng.standard_normal(n_fft))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(freqs), n_fft)[:n]
    pink /= np.sqrt(np.mean(pink**2)) + 1e-12
    share = rng.random()
    return np.sqrt(share) * pink + np.sqrt(1.0 - share) * white


def resampling_factors(from_rate: int, to_rate: int) -> tuple[int, int]:
    common = math.gcd(from_rate, to_rate)
    return to_rate // common, from_rate // common


@functools.lru_cache(maxsize=None)
def resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass filter ``resample_poly`` would design for these factors, designed once (it costs as
    much as the resampling itself)."""
    max_rate = max(up, down)
    return firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
