"""Readers for the three input forms. Each yields one :class:`RawRow` per non-blank manifest line, in file
order, with the source file and line number that ``rejects.jsonl`` reports; a line that cannot be parsed
comes out as a row carrying its rejection instead of an exception.

- NeMo / Granary JSONL (``.json``, ``.jsonl``, ``.jsonl.gz``): one JSON object per line.
- NeMo tarred datasets: the same rows, sharded, their audio in tar files (``data_prep/tarred.py``).
- Lhotse manifests: a cuts manifest, or a recordings manifest plus a supervisions manifest.
- A folder of audio plus a TSV: ``<audio path><TAB><transcript>`` per line, an optional header line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from lhotse import MonoCut, MultiCut, Recording, RecordingSet, SupervisionSegment, fastcopy
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from data_prep.errors import DataPrepError, Rejected, one_line
from data_prep.settings import InputSpec

_TSV_HEADERS = {"audio", "audio_filepath", "audio_path", "path", "file", "filename"}


@dataclass
class RawRow:
    source: str
    line: int
    fields: dict | None = None  # NeMo and TSV rows: the manifest fields
    cut: Cut | None = None  # Lhotse rows: the cut as the manifest describes it
    archive: str | None = None  # NeMo tarred rows: the tar file holding the row's audio_filepath as a member
    error: Rejected | None = None


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, str | None, Rejected | None]]:
    """(line number, decoded line or None, rejection) for every non-blank line of ``path``."""
    try:
        with _open(path) as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    yield number, raw.decode("utf-8"), None
                except UnicodeDecodeError as e:
                    yield number, None, Rejected("bad_encoding", f"byte {e.start}: {e.reason}")
    except (OSError, EOFError, zlib.error) as e:
        raise DataPrepError(f"input manifest cannot be read: {path} ({one_line(e)})") from None


def _json_objects(path: Path) -> Iterator[tuple[int, dict | None, Rejected | None]]:
    for number, text, error in _lines(path):
        if error is None:
            try:
                obj = json.loads(text)
            except ValueError as e:
                obj, error = None, Rejected("bad_json", one_line(e))
            else:
                if not isinstance(obj, dict):
                    obj, error = None, Rejected("bad_json", f"expected a JSON object, got {type(obj).__name__}")
        yield number, obj, error


def read_nemo(spec: InputSpec) -> Iterator[RawRow]:
    for number, obj, error in _json_objects(spec.path):
        yield RawRow(source=str(spec.path), line=number, fields=obj, error=error)


def read_nemo_tarred(spec: InputSpec) -> Iterator[RawRow]:
    """The rows of every shard manifest, in shard order, each with its tar file (by the manifest's shard id, or
    by the row's ``shard_id`` when one manifest covers every shard)."""
    for manifest, shard_id in spec.tarred.manifests:
        for number, obj, error in _json_objects(manifest):
            row = RawRow(source=str(manifest), line=number, fields=obj, error=error)
            if error is None:
                sid = obj.get("shard_id") if shard_id is None else shard_id
                tar = spec.tarred.tar_of(sid)
                if tar is None:
                    row.error = Rejected("bad_field", f"shard_id {sid!r} is not one of the tar files' shard ids")
                else:
                    row.archive = str(tar.resolve())
            yield row


def read_tsv(spec: InputSpec) -> Iterator[RawRow]:
    first = True
    for number, text, error in _lines(spec.path):
        if error is not None:
            yield RawRow(source=str(spec.path), line=number, error=error)
            continue
        text = text.rstrip("\r\n")
        audio, tab, transcript = text.partition("\t")
        if first and audio.strip().lower() in _TSV_HEADERS:
            first = False
            continue
        first = False
        if not tab or not audio.strip():
            yield RawRow(
                source=str(spec.path), line=number, error=Rejected("bad_field", "expected <audio path><TAB><text>")
            )
            continue
        yield RawRow(source=str(spec.path), line=number, fields={"audio_filepath": audio.strip(), "text": transcript})


def _cut_from_supervision(sup: SupervisionSegment, recording: Recording) -> Cut:
    """The cut covering exactly one supervision (whose times become relative to the cut)."""
    channel = sup.channel if sup.channel is not None else recording.channel_ids
    if isinstance(channel, list) and len(channel) == 1:
        channel = channel[0]
    cut_type = MultiCut if isinstance(channel, list) else MonoCut
    return cut_type(
        id=sup.id,
        start=sup.start,
        duration=sup.duration,
        channel=channel,
        recording=recording,
        supervisions=[fastcopy(sup, start=0.0)],
    )


def read_lhotse(spec: InputSpec) -> Iterator[RawRow]:
    source = str(spec.supervisions or spec.path)
    if spec.supervisions is None:
        for number, obj, error in _json_objects(spec.path):
            row = RawRow(source=source, line=number, error=error)
            if error is None:
                try:
                    row.cut = deserialize_item(obj)
                    if not isinstance(row.cut, Cut):
                        raise TypeError(f"expected a cut, got {type(row.cut).__name__}")
                except Exception as e:  # lhotse raises many types for a malformed manifest entry
                    row.error = Rejected("bad_field", f"not a Lhotse cut: {one_line(e)}")
            yield row
        return

    try:
        recordings = RecordingSet.from_file(spec.path)
        recordings = {r.id: r for r in recordings}
    except Exception as e:
        raise DataPrepError(f"recordings manifest cannot be read: {spec.path} ({one_line(e)})") from None
    for number, obj, error in _json_objects(spec.supervisions):
        row = RawRow(source=source, line=number, error=error)
        if error is None:
            try:
                sup = SupervisionSegment.from_dict(obj)
            except Exception as e:
                row.error = Rejected("bad_field", f"not a Lhotse supervision: {one_line(e)}")
            else:
                if sup.recording_id in recordings:
                    row.cut = _cut_from_supervision(sup, recordings[sup.recording_id])
                else:
                    row.error = Rejected("bad_field", f"recording_id {sup.recording_id!r} is not in {spec.path}")
        yield row


READERS = {"nemo": read_nemo, "nemo_tarred": read_nemo_tarred, "lhotse": read_lhotse, "tsv": read_tsv}


def read_input(spec: InputSpec) -> Iterator[RawRow]:
    return READERS[spec.format](spec)
