"""The output: one JSON line per recording (or channel), and SRT/WebVTT captions made from its token times.

A line keeps NeMo's manifest fields (``audio_filepath``, ``offset``, ``duration``, ``text``), so the output is
itself a manifest (pseudo-labels for data preparation), plus ``channel``, ``tokens`` with ``token_start_s`` (the
encoder frame that emitted each token, in seconds from the start of the transcribed audio), ``rtf`` (its share of
the compute over its duration) and ``lookahead_ms``. A line whose audio could not be read has ``error`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from recipes.transcribe.inputs import Item

WORD_START = "\u2581"  # SentencePiece's mark of a piece that starts a word
CUE_CHARS, CUE_SECONDS, CUE_TAIL_S = 42, 5.0, 1.0  # a caption: at most one line of text and a few seconds


def line_of(item: Item, text: str, pieces: list[str], starts: list[float], compute_s: float, lookahead_ms) -> dict:
    return {
        "audio_filepath": item.audio_filepath,
        **({"id": item.id} if item.id else {}),
        "offset": round(item.offset, 3),
        "duration": round(item.duration, 3),
        "channel": item.channel,
        "text": text,
        "tokens": pieces,
        "token_start_s": [round(s, 3) for s in starts],
        "rtf": round(compute_s / max(item.duration, 1e-9), 5),
        "lookahead_ms": lookahead_ms,
    }


def error_line(item: Item) -> dict:
    return {
        "audio_filepath": item.audio_filepath,
        **({"id": item.id} if item.id else {}),
        "offset": round(item.offset, 3),
        "channel": item.channel,
        "error": item.error,
    }


def write_line(out: IO[str], line: dict) -> None:
    out.write(json.dumps(line, ensure_ascii=False) + "\n")


def words(pieces: list[str], token_ids: list[int], starts: list[float], detokenize) -> list[tuple[str, float]]:
    """(word, start) from the tokens: a word starts at a piece marked as a word start; ``detokenize`` turns a
    word's token ids into its text."""
    groups: list[tuple[list[int], float]] = []
    for piece, token, start in zip(pieces, token_ids, starts):
        if not groups or piece.startswith(WORD_START):
            groups.append(([token], start))
        else:
            groups[-1][0].append(token)
    return [(detokenize(ids).strip(), start) for ids, start in groups if detokenize(ids).strip()]


def cues(timed_words: list[tuple[str, float]], duration: float) -> list[tuple[float, float, str]]:
    """Captions (start, end, text): words gathered until a cue would pass :data:`CUE_CHARS` characters or
    :data:`CUE_SECONDS`, or after a word that ends a sentence. A cue ends where the next begins, or
    :data:`CUE_TAIL_S` after its last word, within the audio."""
    groups: list[list[tuple[str, float]]] = []
    for word, start in timed_words:
        current = groups[-1] if groups else None
        text = " ".join(w for w, _ in current or [])
        if (
            current is None
            or len(text) + 1 + len(word) > CUE_CHARS
            or start - current[0][1] > CUE_SECONDS
            or text.endswith((".", "?", "!"))
        ):
            groups.append([])
        groups[-1].append((word, start))
    found = []
    for i, group in enumerate(groups):
        start = group[0][1]
        end = min(group[-1][1] + CUE_TAIL_S, duration)
        if i + 1 < len(groups):
            end = min(end, groups[i + 1][0][1])
        found.append((start, max(end, start + 0.1), " ".join(w for w, _ in group)))
    return found


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def captions_text(found: list[tuple[float, float, str]], fmt: str) -> str:
    """SubRip (``srt``) or WebVTT (``vtt``) text of the cues."""
    if fmt == "srt":
        blocks = [f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{t}\n" for i, (a, b, t) in enumerate(found, 1)]
        return "\n".join(blocks)
    return "WEBVTT\n\n" + "\n".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{t}\n" for a, b, t in found)


def captions_path(folder: Path, item: Item, fmt: str, taken: set[Path]) -> Path:
    """``<folder>/<audio stem>[_<offset ms>][.ch<channel>].<fmt>``, numbered when two inputs share a name."""
    stem = Path(item.audio_filepath).stem
    if item.offset:
        stem += f"_{round(item.offset * 1000)}"
    if item.channel != "mix":
        stem += f".ch{item.channel}"
    path, n = folder / f"{stem}.{fmt}", 1
    while path in taken:
        n += 1
        path = folder / f"{stem}-{n}.{fmt}"
    taken.add(path)
    return path
