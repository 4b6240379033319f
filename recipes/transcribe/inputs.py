"""What ``audio=`` names, as the lines of the output: a file, a folder of audio files (searched recursively), a
NeMo manifest (rows with ``audio_filepath``, optional ``offset``, ``duration``, ``channel``/``channel_selector``)
or a Lhotse cuts manifest. With ``channel=each`` a recording gives one line per channel.

Only headers are read here. A line whose audio cannot be opened carries its reason instead of its audio, in the
words data preparation uses (``audio_missing``, ``audio_unreadable``, ``channel_out_of_range``, ...).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lhotse import CutSet
from lhotse.cut import Cut

from recipes.errors import UsageError, first_line
from recipes.transcribe.audio import Audio, channel_count, file_cut, on_channel
from recipes.transcribe.channels import EACH

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".oga", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".au", ".sph"}
MANIFEST_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut")


@dataclass
class Item:
    """One line of the output: the audio to transcribe, or the reason there is none."""

    audio_filepath: str
    offset: float
    channel: int | str
    audio: Audio | None
    error: str | None = None
    id: str | None = None  # Lhotse inputs: the cut's id

    @property
    def duration(self) -> float:
        return self.audio.cut.duration if self.audio else 0.0


@dataclass
class _Source:
    """A recording or segment named by the input, before its channels are chosen."""

    path: str
    offset: float = 0.0
    duration: float | None = None
    channel: int | None = None  # a manifest row's own channel
    cut: Cut | None = None  # Lhotse inputs


def _first_object(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    found = json.loads(line)
                    return found if isinstance(found, dict) else {}
    except (OSError, ValueError, EOFError) as err:
        raise UsageError(f"audio={path}: cannot be read as a JSON lines manifest ({first_line(err)})") from None
    return {}


def _nemo_rows(path: Path) -> Iterator[_Source]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                audio = str(path.parent / row["audio_filepath"])
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"audio={path}: line {number} is not a NeMo row with audio_filepath") from None
            channel = row.get("channel", row.get("channel_selector"))
            yield _Source(
                audio,
                float(row.get("offset") or 0.0),
                row.get("duration") if "offset" in row else None,  # a whole-file row: its duration is the file's
                channel if isinstance(channel, int) and not isinstance(channel, bool) else None,
            )


def sources(spec: str) -> list[_Source]:
    """The recordings and segments ``spec`` names, in its order (a folder's files sorted by path)."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise UsageError(f"audio={spec}: no audio files in this folder ({', '.join(sorted(AUDIO_SUFFIXES))})")
        return [_Source(str(p)) for p in files]
    if not path.is_file():
        raise UsageError(f"audio={spec}: no such file or folder: give an audio file, a folder or a manifest")
    if not path.name.endswith(MANIFEST_SUFFIXES):
        return [_Source(str(path))]
    first = _first_object(path)
    if "audio_filepath" in first:
        return list(_nemo_rows(path))
    if first.get("type") in CUT_TYPES or "recording" in first:
        return [_Source(c.id, c.start, c.duration, None, c) for c in CutSet.from_file(path)]
    raise UsageError(f"audio={spec}: neither a NeMo manifest (audio_filepath) nor a Lhotse cuts manifest")


def _open(source: _Source) -> Cut:
    if source.cut is not None:
        return source.cut
    if not Path(source.path).is_file():
        raise _Reason("audio_missing", source.path)
    try:
        cut = file_cut(source.path, source.offset, source.duration)
    except ValueError as err:
        raise _Reason("offset_out_of_range", first_line(err)) from None
    except Exception as err:  # every audio backend's failure to read a header
        raise _Reason("audio_unreadable", first_line(err)) from None
    if cut.num_samples == 0:
        raise _Reason("audio_empty", source.path)
    return cut


class _Reason(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")


def items(spec: str, channel: int | str) -> list[Item]:
    """The output's lines for ``audio=spec`` and ``channel=`` (a row's own channel wins over it)."""
    found = []
    for source in sources(spec):
        name = source.path if source.cut is None else _file_of(source.cut)
        cut_id = source.cut.id if source.cut is not None else None
        wanted = channel if source.channel is None else source.channel
        try:
            cut = _open(source)
        except _Reason as err:
            found.append(Item(name, source.offset, wanted, None, str(err), cut_id))
            continue
        for ch in range(channel_count(cut)) if wanted == EACH else [wanted]:
            try:
                found.append(Item(name, source.offset, ch, on_channel(cut, ch), id=cut_id))
            except ValueError as err:
                found.append(Item(name, source.offset, ch, None, f"channel_out_of_range: {err}", cut_id))
    return found


def _file_of(cut: Cut) -> str:
    """The audio file a cut reads (a down-mix: its first track's), or its id when it reads none."""
    track = cut.tracks[0].cut if hasattr(cut, "tracks") else cut
    sources_ = track.recording.sources if track.has_recording else []
    return sources_[0].source if sources_ and sources_[0].type == "file" else cut.id
