"""Paths checked for their kind: an existing file or directory, a non-empty one, a directory that can be created
and written, a Lhotse cuts manifest (by its first line)."""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recipes.errors import first_line
from recipes.schema.kinds import Kind

CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut")
CUTS_FIX = "give a Lhotse cuts manifest, as python -m data_prep writes it (<out_root>/<corpus>/<split>/cuts.jsonl.gz)"


def cuts_problem(path: Path) -> str | None:
    """None when ``path`` is a Lhotse cuts manifest (JSONL, gzipped or not) whose first line is a cut."""
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            line = next((line for line in f if line.strip()), None)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        return f"cannot be read ({first_line(err)})"
    if line is None:
        return "holds no cuts, so nothing to train or score on (data prep's summary.json says what it kept)"
    try:
        first = json.loads(line)
    except ValueError:
        first = None
    if isinstance(first, dict) and (first.get("type") in CUT_TYPES or {"id", "recording"} <= set(first)):
        return None
    what = "a NeMo manifest" if isinstance(first, dict) and "audio_filepath" in first else "not a cuts manifest"
    return f"{what}, not Lhotse cuts (by its first line)"


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class PathKind(Kind):
    """A path: ``any`` (a name only), ``file``, ``dir``, ``nonempty`` (a non-empty file or directory), ``cuts`` (a
    Lhotse cuts manifest, by its first line), ``writable_dir`` (a directory, or one that can be created), or
    ``writable_file`` (a file to write: not a directory, in a directory that can be created)."""

    of: str = "any"
    fix: str = ""  # what to do, after what is wrong (the cuts kind has its own default)
    null: bool = False

    def problem(self, value):
        if not isinstance(value, str) or not value.strip():
            return "give a path"
        problem = getattr(self, f"_{self.of}")(Path(value).expanduser())
        fix = self.fix or (CUTS_FIX if self.of == "cuts" else "")
        return f"{problem}: {fix}" if problem and fix else problem

    @staticmethod
    def _any(path):
        return None

    @staticmethod
    def _file(path):
        return None if path.is_file() else ("a directory, not a file" if path.is_dir() else "no such file")

    @staticmethod
    def _dir(path):
        return None if path.is_dir() else ("a file, not a directory" if path.exists() else "no such directory")

    @staticmethod
    def _nonempty(path):
        if path.is_dir():
            return None if any(path.iterdir()) else "the directory is empty"
        if not path.exists():
            return "not found"
        try:
            with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
                return None if f.read(1) else "the file is empty"
        except (OSError, EOFError) as err:
            return f"cannot be read ({first_line(err)})"

    @staticmethod
    def _cuts(path):
        if path.is_dir():
            return "a directory: give its cuts manifest (cuts.jsonl.gz)"
        return cuts_problem(path) if path.exists() else "not found"

    @staticmethod
    def _writable_dir(path):
        if path.exists() and not path.is_dir():
            return "a file, not a directory: give a directory to write into"
        base = nearest_existing(path)
        if not base.is_dir():
            return f"cannot be created ({base} is a file): give a directory to write into"
        try:  # a real probe: os.access says yes to root everywhere, /proc included
            tempfile.TemporaryFile(dir=base).close()
        except OSError as err:
            return f"cannot be written in ({base}: {err.strerror}): give a directory you can write to"
        return None

    @staticmethod
    def _writable_file(path):
        if path.is_dir():
            return "a directory: give a file name"
        return PathKind._writable_dir(path.parent)

    def describe(self):
        return {
            "any": "a path",
            "file": "an existing file",
            "dir": "an existing directory",
            "nonempty": "an existing, non-empty file or directory",
            "cuts": "a Lhotse cuts manifest (checked by its first line)",
            "writable_dir": "a directory that exists or can be created, writable",
            "writable_file": "a file path in a writable directory",
        }[self.of]

    def wrong(self):
        return 0 if self.of == "any" else "/dev/null/x" if self.of.startswith("writable") else "/nonexistent/x.jsonl.gz"
