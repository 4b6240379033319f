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

Run: ``python -m data_prep.demo_corpus [domains.general.train=100] [seed=1] [out_dir=...]``."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import soundfile as sf
from omegaconf import DictConfig, OmegaConf
from scipy.signal import resample_poly

from data_prep.demo_corpus.speech import (
    DEFAULT_VARIANTS,
    DEFAULT_VOICES,
    check_voices,
    noise,
    resampling_factors,
    resampling_filter,
    shared_speaker,
    to_pcm16,
    trim,
)
from data_prep.demo_corpus.texts import DOMAINS, PLAIN, SPLITS, pick, sample_texts

log = logging.getLogger(__name__)
DEFAULT_SIZES = {"general": {"train": 3000, "dev": 150}, "target": {"train": 800, "dev": 150}}


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
        variant = pick(rng, variants)
        utterances.append(
            Utterance(
                index=index,
                text=text,
                voice=pick(rng, voices) + (f"+{variant}" if variant else ""),
                rate_wpm=int(rng.integers(rate_wpm[0], rate_wpm[1] + 1)),
                pitch=int(rng.integers(pitch[0], pitch[1] + 1)),
                peak=_uniform(rng, (0.3, 0.8)),
                lead_s=_uniform(rng, silence_s),
                trail_s=_uniform(rng, silence_s),
                seed=int(rng.integers(2**31 - 1)),
            )
        )

    in_session = np.zeros(len(texts), dtype=bool)
    in_session[rng.choice(len(texts), size=round(long_recording_fraction * len(texts)), replace=False)] = True
    session_members = [u for u in utterances if in_session[u.index]]
    recordings = []
    start = 0
    while start < len(session_members):
        size = int(rng.integers(session_size[0], session_size[1] + 1))
        if len(session_members) - (start + size) < session_size[0]:
            size = len(session_members) - start  # the last session takes what a new one would lack
        members = tuple(session_members[start : start + size])
        start += size
        recordings.append(
            Recording(
                path=audio_dir / f"{prefix}_session_{len(recordings):04d}.wav",
                utterances=members,
                is_session=True,
                snr_db=_uniform(rng, snr_db),
                gaps_s=(0.0,) + tuple(_uniform(rng, session_gap_s) for _ in members[1:]),
                seed=int(rng.integers(2**31 - 1)),
                sample_rate=sample_rate,
            )
        )
    for u in utterances:
        if not in_session[u.index]:
            recordings.append(
                Recording(
                    path=audio_dir / f"{prefix}_{u.index:06d}.wav",
                    utterances=(u,),
                    is_session=False,
                    snr_db=_uniform(rng, snr_db),
                    gaps_s=(0.0,),
                    seed=int(rng.integers(2**31 - 1)),
                    sample_rate=sample_rate,
                )
            )
    return recordings


def _render_utterance(u: Utterance, sample_rate: int) -> tuple[np.ndarray, int, int]:
    """Clean float audio of ``u`` with its silences (a whole number of ms long), and where its speech
    starts and ends."""
    speaker = shared_speaker()
    native_rate = speaker.sample_rate
    raw = speaker.speak(u.text, u.voice, u.rate_wpm, u.pitch, u.seed).astype(np.float64) / 32768.0
    if not np.any(raw):
        raise RuntimeError(f"eSpeak gave no audio for {u.text!r} in voice {u.voice!r}")
    speech = trim(raw)
    if native_rate != sample_rate:
        up, down = resampling_factors(native_rate, sample_rate)
        speech = resample_poly(speech, up, down, window=resampling_filter(up, down))
    speech *= u.peak / (np.abs(speech).max() + 1e-12)
    quantum = _ms_quantum(sample_rate)
    lead = round(u.lead_s * sample_rate / quantum) * quantum
    total = math.ceil((lead + speech.size + u.trail_s * sample_rate) / quantum) * quantum
    out = np.zeros(total)
    out[lead : lead + speech.size] = speech
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
    mixed = clean + np.sqrt(noise_power) * noise(rng, clean.size)
    rec.path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(rec.path, to_pcm16(mixed), rec.sample_rate, subtype="PCM_16", format="WAV")
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
    text_style: str = PLAIN,
) -> dict[str, dict[str, Path]]:
    """Synthesise the demo corpus into ``out_dir`` and return ``{domain: {split: manifest path}}``.

    ``sizes`` maps domain -> split -> number of utterances (default :data:`DEFAULT_SIZES`; a domain or split
    left out is not written). Ranges are ``(low, high)``, inclusive for the integer ones. Dev sentences never
    occur in train. A split that is written replaces its manifest and the WAV files in its audio folder.
    ``text_style`` ``pnc``: the same sentences punctuated and capitalised (spoken and written so).
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
            texts = sample_texts(domain, int(sizes[domain][split]), rng, exclude=dev_texts, style=text_style)
            if split == "dev":
                dev_texts = frozenset(texts)
            manifest = out_dir / domain / f"{split}.jsonl"
            audio_dir = out_dir / domain / "audio" / split
            for stale in audio_dir.glob("*.wav"):
                stale.unlink()
            recordings = plan_split(
                texts,
                audio_dir,
                rng,
                voices=voices,
                variants=variants,
                rate_wpm=rate_wpm,
                pitch=pitch,
                snr_db=snr_db,
                silence_s=silence_s,
                long_recording_fraction=long_recording_fraction,
                session_size=session_size,
                session_gap_s=session_gap_s,
                sample_rate=sample_rate,
                prefix=split,
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
    log.info(
        "synthesised %d recordings in %.1f s with %d worker(s)",
        len(all_recordings),
        time.perf_counter() - started,
        num_workers,
    )

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
        log.info(
            "%s/%s: %d utterances, %.3f h (%d in %d long recordings) -> %s",
            domain,
            split,
            len(rows),
            hours,
            n_long,
            sum(rec.is_session for rec in recordings),
            manifest,
        )
        manifests.setdefault(domain, {})[split] = manifest
    return manifests


def run(cfg: DictConfig) -> dict[str, dict[str, Path]]:
    """:func:`make_demo_corpus` from a composed ``conf/data_prep/demo_corpus.yaml``."""
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
        text_style=cfg.text_style,
    )
