"""The embedded demo corpus: a small English speech corpus synthesised offline with eSpeak NG.

Two domains, each with ``train`` and ``dev`` splits, written as NeMo JSONL manifests:

* ``general``: everyday sentences from a small template grammar;
* ``target``: aviation radio calls (callsigns, ICAO alphabet, headings, flight levels, ...), whose
  vocabulary barely overlaps the general one (digits aside), so that fine-tuning on it has something to learn.

Layout under ``out_dir``::

    <domain>/<split>.jsonl           {"audio_filepath", "duration", "text"[, "offset"]}, paths relative to it
    <domain>/audio/<split>/*.wav     16-bit mono PCM

A fraction of the utterances is joined into longer "session" recordings that several manifest lines point
into with ``offset`` + ``duration`` (as in Granary); the rest get one file each.

Everything random comes from ``numpy.random.default_rng([seed, domain, split])``, drawn in the main
process before any audio is made, so one seed gives the same texts and byte-identical audio (on the same
machine and library versions) whatever ``num_workers`` is. libespeak-ng carries hidden state from one
synthesis to the next (static wavegen variables that even ``espeak_Terminate`` does not reset: the same call
twice gives slightly different audio), and some variants draw on ``rand()``, seeded differently in every
process. So a small speaker process initialises the library but never speaks itself; each utterance is
spoken in a forked child of it, with the random seed set explicitly. That needs ``os.fork`` (Linux, macOS).

Run: ``python -m data_prep.demo_corpus [domains.general.train=100] [seed=1] [out_dir=...]``.
"""
from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import hydra
import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf
from scipy.fft import next_fast_len
from scipy.signal import firwin, resample_poly

log = logging.getLogger(__name__)

DOMAINS = ("general", "target")
SPLITS = ("train", "dev")
DEFAULT_SIZES = {"general": {"train": 3000, "dev": 150}, "target": {"train": 800, "dev": 150}}
DEFAULT_VOICES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-us-nyc")
# "" keeps the voice's own timbre; the others are files in espeak-ng-data/voices/!v.
DEFAULT_VARIANTS = ("", "m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt")

# Shared by both domains, except that the target domain says "niner" for nine, as on the radio.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# --------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _maybe(rng: np.random.Generator, p: float, text: str) -> str:
    return text if rng.random() < p else ""


def _join(*parts: str) -> str:
    return " ".join(" ".join(parts).split())


_G_SUBJECTS = ("i", "you", "we", "they", "she", "he", "my sister", "my brother", "our neighbor", "the teacher",
               "my friend", "the children")
_G_VERBS = (("bring", "brought"), ("buy", "bought"), ("find", "found"), ("make", "made"), ("clean", "cleaned"),
            ("open", "opened"), ("carry", "carried"), ("paint", "painted"), ("fix", "fixed"), ("wash", "washed"),
            ("move", "moved"), ("sell", "sold"), ("want", "wanted"), ("need", "needed"), ("see", "saw"),
            ("forget", "forgot"), ("borrow", "borrowed"), ("drop", "dropped"), ("like", "liked"), ("take", "took"))
_G_NOUNS = (("book", "books"), ("cup", "cups"), ("apple", "apples"), ("chair", "chairs"), ("window", "windows"),
            ("bottle", "bottles"), ("shirt", "shirts"), ("box", "boxes"), ("key", "keys"), ("phone", "phones"),
            ("lamp", "lamps"), ("basket", "baskets"), ("bicycle", "bicycles"), ("sandwich", "sandwiches"),
            ("jacket", "jackets"), ("umbrella", "umbrellas"), ("plate", "plates"), ("egg", "eggs"),
            ("orange", "oranges"), ("letter", "letters"), ("picture", "pictures"), ("shoe", "shoes"),
            ("hat", "hats"), ("flower", "flowers"))
_G_ADJECTIVES = ("red", "blue", "green", "yellow", "small", "big", "old", "new", "warm", "cold", "heavy", "bright",
                 "soft", "clean", "dirty", "little", "pretty", "broken", "empty", "funny")
_G_PLACES = ("kitchen", "garden", "market", "school", "library", "office", "bakery", "beach", "museum", "park",
             "river", "house", "shop", "cinema")
# Past or present times only: most templates that take one are in the past tense.
_G_TIMES = ("today", "yesterday", "this morning", "this evening", "last night", "on monday", "on tuesday",
            "on wednesday", "on thursday", "on friday", "on saturday", "on sunday", "after lunch", "before dinner")
_G_ACTIVITIES = ("playing", "reading", "cooking", "sleeping", "walking", "working", "singing", "swimming")
_G_FEELINGS = ("tired", "hungry", "busy", "late", "happy", "thirsty", "bored", "sorry")
_G_SPOTS = ("on the table", "in the kitchen", "under the chair", "near the window", "in the garden",
            "in my bag", "at the door")
_G_DEGREE = ("very", "really", "quite", "too", "so")
_G_BE_SUBJECTS = ("i'm", "we're", "she's", "they're", "he's", "you're")


def _with_article(article: str, phrase: str) -> str:
    if article == "a" and phrase[0] in "aeiou":
        article = "an"
    return _join(article, phrase)


def _g_object(rng: np.random.Generator) -> str:
    singular, plural = _pick(rng, _G_NOUNS)
    adjective = _maybe(rng, 0.5, _pick(rng, _G_ADJECTIVES))
    if rng.random() < 0.4:
        count = _pick(rng, NUMBER_WORDS[2:])
        return _join(_pick(rng, (count, "some", "the", "my")), adjective, plural)
    return _with_article(_pick(rng, ("the", "a", "my", "your", "our")), _join(adjective, singular))


def _general_sentence(rng: np.random.Generator) -> str:
    verb, past = _pick(rng, _G_VERBS)
    singular, plural = _pick(rng, _G_NOUNS)
    adjective = _pick(rng, _G_ADJECTIVES)
    templates: tuple[Callable[[], str], ...] = (
        lambda: _join(_pick(rng, _G_SUBJECTS), past, _g_object(rng), _maybe(rng, 0.5, _pick(rng, _G_TIMES))),
        lambda: _join("the", singular, "is", _maybe(rng, 0.6, _pick(rng, _G_DEGREE)), adjective),
        lambda: _join("the", plural, "are", _maybe(rng, 0.6, _pick(rng, _G_DEGREE)), adjective),
        lambda: _join("let's", verb, "the", plural, _maybe(rng, 0.4, _pick(rng, ("tomorrow", "after lunch")))),
        lambda: _join("i", _pick(rng, ("don't", "can't", "won't", "didn't")), verb, _g_object(rng)),
        lambda: _join("it's", _pick(rng, NUMBER_WORDS[1:]), "o'clock", _maybe(rng, 0.4, "already")),
        lambda: _join("meet me at the", _pick(rng, _G_PLACES), "at", _pick(rng, NUMBER_WORDS[1:]), "o'clock"),
        lambda: _join("where is", _pick(rng, ("my", "the", "your")), _maybe(rng, 0.5, adjective), singular),
        lambda: _join("can you", verb, "the", _maybe(rng, 0.4, adjective), singular, _maybe(rng, 0.5, "please")),
        lambda: _join("there are", _pick(rng, NUMBER_WORDS[2:]), plural, _pick(rng, _G_SPOTS)),
        lambda: _join("there is one", singular, _pick(rng, _G_SPOTS)),
        lambda: _join(_pick(rng, _G_BE_SUBJECTS), _pick(rng, _G_ACTIVITIES), "in the", _pick(rng, _G_PLACES)),
        lambda: _join(_pick(rng, ("my phone number ends with", "the code is", "our room is number")),
                      *(_pick(rng, NUMBER_WORDS) for _ in range(int(rng.integers(3, 5))))),
        lambda: _join(_pick(rng, _G_SUBJECTS), "went to the", _pick(rng, _G_PLACES), _pick(rng, _G_TIMES)),
        lambda: _join("did you", verb, _g_object(rng), _maybe(rng, 0.5, _pick(rng, _G_TIMES))),
        lambda: _join(_pick(rng, _G_BE_SUBJECTS), _maybe(rng, 0.5, _pick(rng, _G_DEGREE)), _pick(rng, _G_FEELINGS),
                      _maybe(rng, 0.5, _pick(rng, _G_TIMES))),
        lambda: _join("that's", _with_article("a", _join(_maybe(rng, 0.7, adjective), singular))),
        lambda: _join("the", _pick(rng, _G_PLACES), _pick(rng, ("isn't", "was", "wasn't")),
                      _pick(rng, _G_DEGREE), _pick(rng, ("busy", "quiet", "warm", "cold", "big", "small"))),
        lambda: _join("please", verb, _g_object(rng), _maybe(rng, 0.5, "and help me")),
    )
    return _pick(rng, templates)()


_T_DIGITS = NUMBER_WORDS[:9] + ("niner",)
_T_LETTERS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
              "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform",
              "victor", "whiskey", "xray", "yankee", "zulu")
_T_AIRLINES = ("speedbird", "shamrock", "ryanair", "united", "delta", "cactus", "american", "easy")
_T_FACILITIES = ("tower", "ground", "approach", "departure", "radar", "center")
_T_READBACKS = ("wilco", "roger", "affirm", "negative", "standby", "say again")
_T_REQUESTS = ("request taxi", "request descent", "request higher", "ready for departure", "going around",
               "passing flight level one zero zero", "established on the localizer", "field in sight")


def _digits(rng: np.random.Generator, n: int, first_nonzero: bool = False, top: int = 10) -> str:
    out = [_T_DIGITS[int(rng.integers(1 if first_nonzero else 0, top))]]
    out += [_T_DIGITS[int(rng.integers(top))] for _ in range(n - 1)]
    return " ".join(out)


def _t_callsign(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.75:
        return _join(_pick(rng, _T_AIRLINES), _digits(rng, int(rng.integers(2, 4)), first_nonzero=True))
    if kind < 0.9:
        letters = " ".join(_pick(rng, _T_LETTERS) for _ in range(int(rng.integers(1, 3))))
        return _join("november", _digits(rng, int(rng.integers(1, 3)), first_nonzero=True), letters)
    return _join("cessna", _digits(rng, 3, first_nonzero=True))


def _t_runway(rng: np.random.Generator) -> str:
    number = int(rng.integers(1, 37))
    side = _pick(rng, ("", "", "left", "right", "center"))
    return _join(_T_DIGITS[number // 10], _T_DIGITS[number % 10], side)


def _t_flight_level(rng: np.random.Generator) -> str:
    level = int(rng.integers(8, 42)) * 10
    return _join("flight level", _T_DIGITS[level // 100], _T_DIGITS[level // 10 % 10], "zero")


def _t_heading(rng: np.random.Generator) -> str:
    heading = int(rng.integers(1, 73)) * 5
    return " ".join(_T_DIGITS[int(c)] for c in f"{heading:03d}")


def _t_frequency(rng: np.random.Generator) -> str:
    mhz = int(rng.integers(118, 137))
    decimals = [_pick(rng, _T_DIGITS)] + ([_pick(rng, ("zero", "two", "five", "seven"))] if rng.random() < 0.3 else [])
    return _join(*(_T_DIGITS[int(c)] for c in str(mhz)), "decimal", *decimals)


def _t_altitude(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return _t_flight_level(rng)
    return _join(_T_DIGITS[int(rng.integers(2, 10))], "thousand", _maybe(rng, 0.3, "five hundred"), "feet")


def _t_speed(rng: np.random.Generator) -> str:
    return _join(_T_DIGITS[int(rng.integers(1, 3))], _T_DIGITS[int(rng.integers(10))], "zero knots")


def _target_sentence(rng: np.random.Generator) -> str:
    # Instructions usually start with the callsign; leaving it out now and then keeps most calls under 4 s.
    callsign = _t_callsign(rng) if rng.random() < 0.8 else ""
    templates: tuple[Callable[[], str], ...] = (
        lambda: _join(callsign, "climb", _maybe(rng, 0.5, "and maintain"), _t_flight_level(rng)),
        lambda: _join(callsign, "descend", _maybe(rng, 0.5, "and maintain"), _t_altitude(rng)),
        lambda: _join(callsign, "turn", _pick(rng, ("left", "right")), "heading", _t_heading(rng)),
        lambda: _join(callsign, "contact", _pick(rng, _T_FACILITIES), _t_frequency(rng)),
        lambda: _join(callsign, "cleared to land runway", _t_runway(rng)),
        lambda: _join(callsign, "cleared for takeoff runway", _t_runway(rng)),
        lambda: _join(callsign, "squawk", _digits(rng, 4, top=8)),
        lambda: _join(callsign, "hold short", _maybe(rng, 0.5, "of"), "runway", _t_runway(rng)),
        lambda: _join(callsign, "taxi to holding point", _pick(rng, _T_LETTERS), _pick(rng, _T_DIGITS[1:]),
                      "via", _pick(rng, _T_LETTERS)),
        lambda: _join(callsign, "line up and wait runway", _t_runway(rng)),
        lambda: _join(callsign, _pick(rng, ("reduce speed", "maintain", "increase speed")), _t_speed(rng)),
        lambda: _join("wind", _t_heading(rng), "degrees", _digits(rng, 2, first_nonzero=True, top=4), "knots"),
        lambda: _join(_pick(rng, _T_READBACKS), callsign or _t_callsign(rng)),
        lambda: _join(callsign or _t_callsign(rng), _pick(rng, _T_REQUESTS)),
        lambda: _join(callsign, "altimeter", _pick(rng, ("two niner", "three zero", "one zero", "niner niner")),
                      _digits(rng, 2)),
        lambda: _join(callsign or _t_callsign(rng), "go around"),
        lambda: _join(_pick(rng, ("climbing", "descending")), _t_flight_level(rng), callsign),
    )
    return _pick(rng, templates)()


SENTENCE_MAKERS: dict[str, Callable[[np.random.Generator], str]] = {
    "general": _general_sentence,
    "target": _target_sentence,
}


def sample_texts(domain: str, n: int, rng: np.random.Generator, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``n`` sentences of ``domain`` (repeats allowed), none of them in ``exclude``."""
    make = SENTENCE_MAKERS[domain]
    texts = []
    while len(texts) < n:
        for _ in range(1000):
            text = make(rng)
            if text not in exclude:
                break
        else:
            raise RuntimeError(f"the {domain} grammar keeps producing excluded sentences")
        texts.append(text)
    return texts


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
            [sys.executable, "-I", "-c", _SPEAKER_PROGRAM, espeakng_loader.get_library_path(),
             espeakng_loader.get_data_path()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
        payload = self._request("speak", text=text, voice=voice, rate_wpm=int(rate_wpm), pitch=int(pitch),
                                seed=int(seed))
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


def _speaker() -> EspeakSpeaker:
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
    missing += _speaker().unknown_voices(voices)
    if missing:
        raise ValueError(f"not in eSpeak's data ({variant_dir.parent.parent}): {', '.join(missing)}")


# --------------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------------


def _trim(x: np.ndarray, rel_threshold: float = 0.01, margin: int = 200) -> np.ndarray:
    """Cut eSpeak's own leading and trailing silence, keeping ``margin`` samples around the speech."""
    loud = np.flatnonzero(np.abs(x) > rel_threshold * np.abs(x).max())
    if loud.size == 0:
        return x
    return x[max(loud[0] - margin, 0):loud[-1] + margin + 1]


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
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


def _resampling_factors(from_rate: int, to_rate: int) -> tuple[int, int]:
    common = math.gcd(from_rate, to_rate)
    return to_rate // common, from_rate // common


@functools.lru_cache(maxsize=None)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass filter ``resample_poly`` would design for these factors, designed once (it costs as
    much as the resampling itself)."""
    max_rate = max(up, down)
    return firwin(20 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _ms_quantum(sample_rate: int) -> int:
    """The fewest samples that last a whole number of milliseconds (16 at 16 kHz), so that every duration
    and offset we write is exact at 3 decimals."""
    return sample_rate // math.gcd(sample_rate, 1000)


# --------------------------------------------------------------------------------------------------------
# Plan (drawn in the main process) and rendering (in workers)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    index: int
    text: str
    voice: str
    rate_wpm: int
    pitch: int
    peak: float
    lead_s: float
    trail_s: float
    seed: int


@dataclass(frozen=True)
class Recording:
    """One WAV file: a single utterance, or a session of several with gaps between them."""

    path: Path
    utterances: tuple[Utterance, ...]
    is_session: bool
    snr_db: float
    gaps_s: tuple[float, ...]  # extra silence before each utterance (0 before the first)
    seed: int  # of the noise
    sample_rate: int


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = bounds
    return float(rng.uniform(low, high))


def plan_split(
    texts: Sequence[str],
    audio_dir: Path,
    rng: np.random.Generator,
    *,
    voices: Sequence[str],
    variants: Sequence[str],
    rate_wpm: Sequence[int],
    pitch: Sequence[int],
    snr_db: Sequence[float],
    silence_s: Sequence[float],
    long_recording_fraction: float,
    session_size: Sequence[int],
    session_gap_s: Sequence[float],
    sample_rate: int,
    prefix: str,
) -> list[Recording]:
    """Draw every random choice for one split: voice, rate, pitch, level, silences, noise, and which
    utterances share a session recording. Rendering the plan needs no further randomness from ``rng``."""
    utterances = []
    for index, text in enumerate(texts):
        variant = _pick(rng, variants)
        utterances.append(Utterance(
            index=index,
            text=text,
            voice=_pick(rng, voices) + (f"+{variant}" if variant else ""),
            rate_wpm=int(rng.integers(rate_wpm[0], rate_wpm[1] + 1)),
            pitch=int(rng.integers(pitch[0], pitch[1] + 1)),
            peak=_uniform(rng, (0.3, 0.8)),
            lead_s=_uniform(rng, silence_s),
            trail_s=_uniform(rng, silence_s),
            seed=int(rng.integers(2**31 - 1)),
        ))

    in_session = np.zeros(len(texts), dtype=bool)
    in_session[rng.choice(len(texts), size=round(long_recording_fraction * len(texts)), replace=False)] = True
    session_members = [u for u in utterances if in_session[u.index]]
    recordings = []
    start = 0
    while start < len(session_members):
        size = int(rng.integers(session_size[0], session_size[1] + 1))
        if len(session_members) - (start + size) < session_size[0]:
            size = len(session_members) - start  # the last session takes what a new one would lack
        members = tuple(session_members[start:start + size])
        start += size
        recordings.append(Recording(
            path=audio_dir / f"{prefix}_session_{len(recordings):04d}.wav",
            utterances=members,
            is_session=True,
            snr_db=_uniform(rng, snr_db),
            gaps_s=(0.0,) + tuple(_uniform(rng, session_gap_s) for _ in members[1:]),
            seed=int(rng.integers(2**31 - 1)),
            sample_rate=sample_rate,
        ))
    for u in utterances:
        if not in_session[u.index]:
            recordings.append(Recording(
                path=audio_dir / f"{prefix}_{u.index:06d}.wav",
                utterances=(u,),
                is_session=False,
                snr_db=_uniform(rng, snr_db),
                gaps_s=(0.0,),
                seed=int(rng.integers(2**31 - 1)),
                sample_rate=sample_rate,
            ))
    return recordings


def _render_utterance(u: Utterance, sample_rate: int) -> tuple[np.ndarray, int, int]:
    """Clean float audio of ``u`` with its silences (a whole number of ms long), and where its speech
    starts and ends."""
    speaker = _speaker()
    native_rate = speaker.sample_rate
    raw = speaker.speak(u.text, u.voice, u.rate_wpm, u.pitch, u.seed).astype(np.float64) / 32768.0
    if not np.any(raw):
        raise RuntimeError(f"eSpeak gave no audio for {u.text!r} in voice {u.voice!r}")
    speech = _trim(raw)
    if native_rate != sample_rate:
        up, down = _resampling_factors(native_rate, sample_rate)
        speech = resample_poly(speech, up, down, window=_resampling_filter(up, down))
    speech *= u.peak / (np.abs(speech).max() + 1e-12)
    quantum = _ms_quantum(sample_rate)
    lead = round(u.lead_s * sample_rate / quantum) * quantum
    total = math.ceil((lead + speech.size + u.trail_s * sample_rate) / quantum) * quantum
    out = np.zeros(total)
    out[lead:lead + speech.size] = speech
    return out, lead, lead + speech.size


def render_recording(rec: Recording) -> list[tuple[int, float, float]]:
    """Synthesise, mix and write ``rec``. Returns ``(utterance index, offset s, duration s)`` per utterance."""
    rng = np.random.default_rng(rec.seed)
    quantum = _ms_quantum(rec.sample_rate)
    pieces, spans, speech_power = [], [], []
    position = 0
    for u, gap_s in zip(rec.utterances, rec.gaps_s):
        gap = round(gap_s * rec.sample_rate / quantum) * quantum
        pieces.append(np.zeros(gap))
        position += gap
        audio, start, end = _render_utterance(u, rec.sample_rate)
        pieces.append(audio)
        spans.append((u.index, position, audio.size))
        speech_power.append(float(np.mean(audio[start:end] ** 2)))
        position += audio.size
    clean = np.concatenate(pieces)
    noise_power = float(np.mean(speech_power)) / 10.0 ** (rec.snr_db / 10.0)
    mixed = clean + np.sqrt(noise_power) * _noise(rng, clean.size)
    rec.path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(rec.path, _to_pcm16(mixed), rec.sample_rate, subtype="PCM_16", format="WAV")
    return [(index, start / rec.sample_rate, length / rec.sample_rate) for index, start, length in spans]


# --------------------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------------------


def make_demo_corpus(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sizes: Mapping[str, Mapping[str, int]] | None = None,
    voices: Sequence[str] = DEFAULT_VOICES,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    rate_wpm: Sequence[int] = (140, 190),
    pitch: Sequence[int] = (30, 70),
    snr_db: Sequence[float] = (20.0, 35.0),
    silence_s: Sequence[float] = (0.05, 0.3),
    long_recording_fraction: float = 0.2,
    session_size: Sequence[int] = (3, 6),
    session_gap_s: Sequence[float] = (0.1, 0.5),
    sample_rate: int = 16000,
    num_workers: int = 2,
) -> dict[str, dict[str, Path]]:
    """Synthesise the demo corpus into ``out_dir`` and return ``{domain: {split: manifest path}}``.

    ``sizes`` maps domain -> split -> number of utterances (default :data:`DEFAULT_SIZES`; a domain or split
    left out is not written). Ranges are ``(low, high)``, inclusive for the integer ones. Dev sentences never
    occur in train. A split that is written replaces its manifest and the WAV files in its audio folder.
    """
    sizes = DEFAULT_SIZES if sizes is None else sizes
    unknown = (set(sizes) - set(DOMAINS)) | ({s for d in sizes.values() for s in d} - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown domains/splits in sizes: {sorted(unknown)}; expected {DOMAINS} x {SPLITS}")
    if not 0.0 <= long_recording_fraction <= 1.0:
        raise ValueError(f"long_recording_fraction must be in [0, 1], got {long_recording_fraction}")
    if not voices or not variants:
        raise ValueError("voices and variants must not be empty ('' is the plain-voice variant)")
    check_voices(voices, variants)
    out_dir = Path(out_dir)

    plans: list[tuple[str, str, Path, list[str], list[Recording]]] = []
    for domain in DOMAINS:
        dev_texts: frozenset[str] = frozenset()
        for split in ("dev", "train"):  # dev first, so that train can avoid its sentences
            if split not in sizes.get(domain, {}):
                continue
            rng = np.random.default_rng([seed, DOMAINS.index(domain), SPLITS.index(split)])
            texts = sample_texts(domain, int(sizes[domain][split]), rng, exclude=dev_texts)
            if split == "dev":
                dev_texts = frozenset(texts)
            manifest = out_dir / domain / f"{split}.jsonl"
            audio_dir = out_dir / domain / "audio" / split
            for stale in audio_dir.glob("*.wav"):
                stale.unlink()
            recordings = plan_split(
                texts, audio_dir, rng, voices=voices, variants=variants,
                rate_wpm=rate_wpm, pitch=pitch, snr_db=snr_db, silence_s=silence_s,
                long_recording_fraction=long_recording_fraction, session_size=session_size,
                session_gap_s=session_gap_s, sample_rate=sample_rate, prefix=split,
            )
            plans.append((domain, split, manifest, texts, recordings))

    all_recordings = [rec for *_, recordings in plans for rec in recordings]
    started = time.perf_counter()
    if num_workers > 1:
        import multiprocessing

        # spawn, not fork: the caller may hold threads (torch, OpenMP) that a fork would copy mid-flight
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            spans = pool.map(render_recording, all_recordings, chunksize=4)
    else:
        spans = [render_recording(rec) for rec in all_recordings]
    log.info("synthesised %d recordings in %.1f s with %d worker(s)", len(all_recordings),
             time.perf_counter() - started, num_workers)

    spans_in_order = iter(spans)
    manifests: dict[str, dict[str, Path]] = {}
    for domain, split, manifest, texts, recordings in plans:
        rows: list[dict | None] = [None] * len(texts)
        for rec in recordings:
            relative = rec.path.relative_to(manifest.parent).as_posix()
            for index, offset, duration in next(spans_in_order):
                row = {"audio_filepath": relative, "duration": round(duration, 3), "text": texts[index]}
                if rec.is_session:
                    row["offset"] = round(offset, 3)
                rows[index] = row
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with manifest.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        hours = sum(row["duration"] for row in rows) / 3600.0
        n_long = sum(len(rec.utterances) for rec in recordings if rec.is_session)
        log.info("%s/%s: %d utterances, %.3f h (%d in %d long recordings) -> %s", domain, split, len(rows),
                 hours, n_long, sum(rec.is_session for rec in recordings), manifest)
        manifests.setdefault(domain, {})[split] = manifest
    return manifests


def run(cfg: DictConfig) -> dict[str, dict[str, Path]]:
    """:func:`make_demo_corpus` from a composed ``conf/demo_corpus.yaml``."""
    return make_demo_corpus(
        cfg.out_dir,
        seed=cfg.seed,
        sizes=OmegaConf.to_container(cfg.domains),
        voices=list(cfg.voices),
        variants=[v or "" for v in cfg.variants],
        rate_wpm=tuple(cfg.rate_wpm),
        pitch=tuple(cfg.pitch),
        snr_db=tuple(cfg.snr_db),
        silence_s=tuple(cfg.silence_s),
        long_recording_fraction=cfg.long_recording_fraction,
        session_size=tuple(cfg.session_size),
        session_gap_s=tuple(cfg.session_gap_s),
        sample_rate=cfg.sample_rate,
        num_workers=cfg.num_workers,
    )


@hydra.main(config_path="../conf", config_name="demo_corpus", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
