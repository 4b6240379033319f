"""NeMo tarred datasets as an input: shards of audio in tar files, each with its manifest.

What NeMo's ``convert_to_tarred_audio_dataset.py`` (and so Granary's tarred release) writes, and what is read here:

- ``audio_0.tar ... audio_N.tar``, and either one manifest per shard (``sharded_manifests/manifest_0.json ...``)
  or one manifest for all (``tarred_audio_manifest.json``) whose rows carry ``shard_id``;
- paths given in NeMo's brace form, ``audio__OP_0..N_CL_.tar`` (= ``audio_{0..N}.tar``); a shard's id is the number
  in its file name (NeMo's pattern: ``manifest*_<id>*.json``, ``audio*_<id>*.tar``);
- a row's ``audio_filepath`` is its tar member's name (the source path with ``/`` and ``.`` squashed to ``_``). A
  recording that several rows point into with ``offset`` is stored once; NeMo then names the later rows
  ``<name>-sub1.<ext>``, ``<name>-sub2.<ext>``, ..., which are found as ``<name>.<ext>``.

The workers read members by random access (each tar's index is read once per worker). The cuts in
``cuts.jsonl.gz`` load their audio with ``tar -xOf <tar> <member>``, so they stay usable without the Shar copy.
"""

from __future__ import annotations

import re
import shlex
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand
from lhotse import AudioSource, Recording, fastcopy

from data_prep.errors import DataPrepError, Rejected, one_line

_MANIFEST_ID = re.compile(r"manifest[^/]*_(\d+)[^/]*\.json")
_TAR_ID = re.compile(r"audio[^/]*_(\d+)[^/]*\.tar")
_SUB = re.compile(r"^(?P<stem>.+)-sub\d+(?P<ext>\.\w+)?$")


@dataclass(frozen=True)
class TarredShards:
    """The files of one tarred input: manifests with the shard id each covers (None: rows carry ``shard_id``)
    and the tar of each shard id."""

    manifests: tuple[tuple[Path, int | None], ...]
    tars: tuple[tuple[int, Path], ...]

    def tar_of(self, shard_id) -> Path | None:
        return dict(self.tars).get(shard_id)


def expand(spec: str) -> list[str]:
    """NeMo's sharded path forms: ``_OP_``/``_CL_`` for braces, then shell-style brace expansion."""
    return list(braceexpand(str(spec).replace("_OP_", "{").replace("_CL_", "}")))


def _shard_ids(paths: list[str], pattern: re.Pattern, key: str) -> list[int]:
    ids = []
    for path in paths:
        found = pattern.search(path)
        if found is None:
            raise DataPrepError(
                f"{key}: cannot tell the shard id of {path}: NeMo names shards like "
                f"{'manifest_<id>.json' if pattern is _MANIFEST_ID else 'audio_<id>.tar'}"
            )
        ids.append(int(found.group(1)))
    return ids


def _existing(paths: list[str], key: str) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataPrepError(f"{key}: no such file: {missing[0]}{more}")
    return [Path(p) for p in paths]


def tarred_shards(item: dict, where: str) -> TarredShards:
    """The shards of a ``{path: <manifest(s)>, tar: <tar files>}`` input, checked (raises :class:`DataPrepError`)."""
    unknown = set(item) - {"path", "tar", "format"}
    if unknown:
        raise DataPrepError(f"{where}: unknown key(s) for a tarred input {sorted(unknown)} (path, tar)")
    if item.get("format", "nemo_tarred") not in ("auto", "nemo_tarred"):
        raise DataPrepError(f"{where}.format={item['format']}: an input with 'tar' is a NeMo tarred dataset")
    if not item.get("path"):
        raise DataPrepError(f"{where}: a tarred input needs 'path', its manifest(s)")
    manifests = expand(item["path"])
    tars = expand(item["tar"])
    manifest_paths = _existing(manifests, f"{where}.path")
    tar_paths = _existing(tars, f"{where}.tar")
    tar_ids = _shard_ids(tars, _TAR_ID, f"{where}.tar")
    if len(set(tar_ids)) != len(tar_ids):
        raise DataPrepError(f"{where}.tar: two tar files have the same shard id")
    if len(manifests) == 1:  # one manifest for every shard: each row says its shard_id
        return TarredShards(((manifest_paths[0], None),), tuple(zip(tar_ids, tar_paths)))
    manifest_ids = _shard_ids(manifests, _MANIFEST_ID, f"{where}.path")
    if sorted(manifest_ids) != sorted(tar_ids):
        raise DataPrepError(
            f"{where}: the manifests cover shards {sorted(manifest_ids)[:8]}..., the tar files "
            f"{sorted(tar_ids)[:8]}...: give the same shards (check both brace ranges)"
        )
    return TarredShards(tuple(zip(manifest_paths, manifest_ids)), tuple(zip(tar_ids, tar_paths)))


def member_command(archive: str, member: str) -> str:
    """The shell command that writes one member's bytes to stdout (the cuts' audio source)."""
    return f"tar -xOf {shlex.quote(archive)} --occurrence=1 -- {shlex.quote(member)}"


class TarArchives:
    """The tar files one worker reads: each one's member index read once, recent members' bytes kept (rows at
    several offsets of one recording read it once while they come together)."""

    def __init__(self, keep: int = 4) -> None:
        self._index: dict[str, dict[str, tarfile.TarInfo] | Rejected] = {}
        self._tars: dict[str, tarfile.TarFile] = {}
        self._recent: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._keep = keep

    def _members(self, archive: str) -> dict[str, tarfile.TarInfo]:
        if archive not in self._index:
            try:
                tar = tarfile.open(archive, "r:")
                self._index[archive] = {m.name: m for m in tar.getmembers() if m.isfile()}
                self._tars[archive] = tar
            except (OSError, tarfile.TarError, EOFError) as e:
                self._index[archive] = Rejected("audio_unreadable", f"tar file {archive}: {one_line(e)}")
        found = self._index[archive]
        if isinstance(found, Rejected):
            raise found
        return found

    def member(self, archive: str, name: str) -> str:
        """The member a row's ``audio_filepath`` names: itself, or NeMo's ``-subN`` row name's recording."""
        members = self._members(archive)
        if name in members:
            return name
        sub = _SUB.match(name)
        if sub and sub["stem"] + (sub["ext"] or "") in members:
            return sub["stem"] + (sub["ext"] or "")
        raise Rejected("audio_missing", f"no member {name!r} in {archive}")

    def read(self, archive: str, member: str) -> bytes:
        key = (archive, member)
        if key not in self._recent:
            self._recent[key] = self._tars[archive].extractfile(self._members(archive)[member]).read()
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
        self._recent.move_to_end(key)
        return self._recent[key]

    def recording(self, archive: str, member: str, recording_id: str) -> Recording:
        """The member's recording (its header read from the bytes), loading through :func:`member_command`."""
        try:
            rec = Recording.from_bytes(self.read(archive, member), recording_id=recording_id)
        except Exception as e:  # any backend's failure to parse the header
            raise Rejected("audio_unreadable", f"{member} in {archive}: {one_line(e)}") from None
        source = AudioSource(type="command", channels=rec.sources[0].channels, source=member_command(archive, member))
        return fastcopy(rec, sources=[source])

    def memory_source(self, archive: str, member: str, channels: list[int]) -> AudioSource:
        """The member's bytes as an in-memory source, for decoding in this process (the Shar writer)."""
        return AudioSource(type="memory", channels=channels, source=self.read(archive, member))
