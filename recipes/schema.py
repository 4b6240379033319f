"""The config schema's parts: what a value may be (a kind: type with its range or choices, or a path of some kind),
a key's row (its dotted name, kind and what its value means), the named cross-key rules, and the check of a composed config.

One schema module that checks the composed DictConfig, not structured configs: conf/*.yaml stay the one place for
the defaults and their comments, and a check reports every mistake at once with its fix (OmegaConf's structured
configs stop at the first type error and know no ranges, paths or library registries).

Each command's table of keys lives beside its rules (``recipes/checks.py`` for the recipes and the Slurm
submitter, ``data_prep/settings.py`` for data preparation); this module is the mechanism they share. Choices a
library keeps in a registry (NeMo's optimizers, Lightning's precisions) are read from it (:class:`Registry`)."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from enum import Enum
from importlib import import_module, metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, get_args

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recipes.errors import UsageError, first_line, raise_problems

CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut")
CUTS_FIX = "give a Lhotse cuts manifest, as python -m data_prep writes it (<out_root>/<corpus>/<split>/cuts.jsonl.gz)"


def show(value: Any) -> str:
    """A config value as the user would type it on the command line."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    return str(value).replace(" ", "") if isinstance(value, (list, dict)) else str(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------- kinds


class Kind:
    """What a value may be. :meth:`problem` says what is wrong and what to do (None: the value is fine);
    :meth:`wrong` is a value the kind refuses, which the tests plant in every key of this kind."""

    null = False

    def check(self, value: Any) -> str | None:
        if value is None:
            return None if self.null else f"required: {self.describe()}"
        return self.problem(value)

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def wrong(self) -> Any:
        return "not-a-value"

    def doc(self) -> str:
        return self.describe() + (" (or null)" if self.null else "")


def _bounds(lo: float | None, hi: float | None, gt: float | None) -> str:
    parts = [("> ", gt), (">= ", lo), ("<= ", hi)]
    return " and ".join(f"{op}{v:g}" if isinstance(v, float) else f"{op}{v}" for op, v in parts if v is not None)


@dataclass(frozen=True)
class Int(Kind):
    lo: int | None = None
    hi: int | None = None
    null: bool = False

    def problem(self, value):
        ok = is_int(value) and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        return None if ok else f"give {self.describe()}"

    def describe(self):
        bounds = _bounds(self.lo, self.hi, None)
        return "an integer" + (f" {bounds}" if bounds else "")

    def wrong(self):
        return self.lo - 1 if self.lo is not None else "x"


@dataclass(frozen=True)
class Number(Kind):
    lo: float | None = None  # inclusive
    hi: float | None = None  # inclusive
    gt: float | None = None  # exclusive lower bound
    null: bool = False

    def problem(self, value):
        ok = is_number(value) and (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)
        return None if ok and (self.gt is None or value > self.gt) else f"give {self.describe()}"

    def describe(self):
        bounds = _bounds(self.lo, self.hi, self.gt)
        return "a number" + (f" {bounds}" if bounds else "")

    def wrong(self):
        return self.gt if self.gt is not None else (self.lo - 1 if self.lo is not None else "x")


@dataclass(frozen=True)
class Bool(Kind):
    null: bool = False

    def problem(self, value):
        return None if isinstance(value, bool) else "give true or false"

    def describe(self):
        return "true or false"

    def wrong(self):
        return "maybe"


@dataclass(frozen=True)
class Str(Kind):
    pattern: str | None = None  # a regular expression the whole value must match
    hint: str = "a non-empty string"
    null: bool = False
    nonempty: bool = True

    def problem(self, value):
        ok = isinstance(value, str) and (value.strip() or not self.nonempty)
        return None if ok and (self.pattern is None or re.fullmatch(self.pattern, value)) else f"give {self.hint}"

    def describe(self):
        return self.hint

    def wrong(self):
        return "" if self.nonempty else 0


@dataclass(frozen=True)
class ClassPath(Str):
    """A ``_target_``: the dotted path of a class Hydra instantiates (imported only when the run is built)."""

    pattern: str = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+"
    hint: str = "a dotted class path, e.g. package.module.Class"


@dataclass(frozen=True)
class Registry:
    """Names a library keeps in a registry (``module:attribute``: a dict, a list, a ``Literal`` or a function
    returning names), read once per installed version of ``package`` and cached on disk: importing NeMo or
    Lightning takes seconds, and a config check should not."""

    package: str
    source: str
    extra: tuple = ()

    def names(self) -> tuple:
        return tuple(registry_names(self.package, self.source)) + self.extra


def _names_in(obj: Any) -> list:
    if isinstance(obj, type) and issubclass(obj, Enum):
        return [member.value for member in obj]
    if callable(obj) and not get_args(obj):
        obj = obj()
    if get_args(obj):  # a Literal, or a Union of them
        return [name for arg in get_args(obj) for name in (_names_in(arg) if get_args(arg) else [arg])]
    return list(obj)


def cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nemotron-recipes" / "registries.json"


def registry_names(package: str, source: str) -> list:
    """The names in ``source`` (``module:attribute``) of the installed ``package``, from the cache when it has
    them for this version, else imported (and then cached)."""
    key = f"{package}=={metadata.version(package)} {source}"
    path = cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        module, _, attribute = source.partition(":")
        cached[key] = _names_in(getattr(import_module(module), attribute))
        try:
            from recipes.run_dir import write_atomic

            write_atomic(path, lambda tmp: tmp.write_text(json.dumps(cached, indent=1)))
        except OSError:
            pass  # a read-only home: the names are read from the library every time
    return cached[key]


@dataclass(frozen=True)
class OneOf(Kind):
    choices: tuple | Registry
    null: bool = False

    def names(self) -> tuple:
        return self.choices.names() if isinstance(self.choices, Registry) else self.choices

    def problem(self, value):
        names = self.names()
        return None if value in names else f"not one of {', '.join(str(n) for n in names)}"

    def describe(self):
        if isinstance(self.choices, Registry):
            return f"a name in {self.choices.source.replace(':', '.')}" + (
                f" or {', '.join(map(str, self.choices.extra))}" if self.choices.extra else ""
            )
        return "one of " + ", ".join(str(c) for c in self.choices)

    def wrong(self):
        return "no_such_choice"


@dataclass(frozen=True)
class Either(Kind):
    """One of several kinds (e.g. an integer, or one of a few words)."""

    kinds: tuple
    null: bool = False

    def problem(self, value):
        problems = [kind.check(value) for kind in self.kinds]
        return None if None in problems else f"give {self.describe()}"

    def describe(self):
        return " or ".join(kind.describe() for kind in self.kinds)

    def wrong(self):
        candidates = ("no_such_choice", -1, [[-1]], {"no_such_key": 1})
        return next(value for value in candidates if self.problem(value))


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    min_len: int = 0
    length: int | None = None
    null: bool = False

    def problem(self, value):
        if not isinstance(value, list) or len(value) < self.min_len or self.length not in (None, len(value)):
            return f"give {self.describe()}"
        for i, item in enumerate(value):
            problem = self.item.check(item)
            if problem:
                return f"[{i}]={show(item)}: {problem}"
        return None

    def describe(self):
        size = f"{self.length} " if self.length else ("a non-empty " if self.min_len else "a ")
        return f"{size}list of {self.item.describe()}"

    def wrong(self):
        return [self.item.wrong()] * (self.length or max(self.min_len, 1))


@dataclass(frozen=True)
class Range(Kind):
    """``[low, high]``, both of ``item``, low <= high."""

    item: Kind
    null: bool = False

    def problem(self, value):
        if not isinstance(value, list) or len(value) != 2 or any(self.item.check(v) for v in value):
            return f"give {self.describe()}"
        return None if value[0] <= value[1] else "give [low, high] with low <= high"

    def describe(self):
        return f"[low, high] of {self.item.describe()}"

    def wrong(self):
        return [2, 1]


@dataclass(frozen=True)
class MapOf(Kind):
    item: Kind
    nonempty: bool = False
    null: bool = False
    required: tuple[str, ...] = ()  # names the mapping must have (each checked by its own row)

    def problem(self, value):
        if not isinstance(value, dict) or (self.nonempty and not value):
            return f"give {self.describe()}"
        missing = [name for name in self.required if name not in value]
        return f"needs {', '.join(missing)}: give {self.describe()}" if missing else None

    def describe(self):
        if self.required:
            return "a mapping with " + ", ".join(self.required)
        return ("a non-empty " if self.nonempty else "a ") + f"mapping {{name: {self.item.describe()}}}"

    def wrong(self):
        return "x"


@dataclass(frozen=True)
class Target(Kind):
    """A mapping Hydra instantiates: ``{_target_: package.module.Class, ...arguments}`` (each checked by its row)."""

    null: bool = False

    def problem(self, value):
        return None if isinstance(value, dict) and "_target_" in value else f"give {self.describe()}"

    def describe(self):
        return "a mapping with _target_ (the class to build) and its arguments"

    def wrong(self):
        return {"no_target": 1}


@dataclass(frozen=True)
class Lookaheads(Kind):
    """``[[left, right], ...]`` (``single``: one ``[left, right]``) that chunked-limited attention can cache:
    left and right >= 0, left a multiple of the chunk (right + 1 frames)."""

    single: bool = False
    null: bool = False

    def problem(self, value):
        pairs = [value] if self.single else value
        shape_ok = isinstance(pairs, list) and pairs and not (self.single and not isinstance(value, list))
        if not shape_ok or not all(isinstance(p, list) and len(p) == 2 and all(is_int(v) for v in p) for p in pairs):
            return f"give {self.describe()}"
        for left, right in pairs:
            if left < 0 or right < 0:
                return f"[{left},{right}] needs left >= 0 and right >= 0 (cache-aware streaming has a bounded left)"
            if left % (right + 1):
                fit = left // (right + 1) * (right + 1)
                return (
                    f"[{left},{right}]: chunked_limited attention needs left divisible by right + 1 = {right + 1}: "
                    f"use [{fit},{right}] or [{fit + right + 1},{right}]"
                )
        return None

    def describe(self):
        if self.single:
            return "[left, right] in 80 ms frames with left divisible by right + 1, e.g. [70,13]"
        return "a list of [left, right] pairs in 80 ms frames, left divisible by right + 1, e.g. [[70,13],[70,0]]"

    def wrong(self):
        return [70, 2] if self.single else [[70, 2]]


# ------------------------------------------------------------------------------------------------ paths


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


@dataclass(frozen=True)
class Checked(Kind):
    """A value checked by a function of the library or recipe that uses it; ``check(value, key)`` raises a
    :class:`UsageError` (its line names the key) or returns nothing."""

    fn: Callable[[Any, str], None]
    text: str
    bad: Any = "/nonexistent/x"
    null: bool = False
    key: str = ""  # set per row by :meth:`Key.kind_for`

    def problem(self, value):
        try:
            self.fn(value, self.key)
        except UsageError as err:
            return str(err)
        return None

    def describe(self):
        return self.text

    def wrong(self):
        return self.bad


@dataclass(frozen=True)
class Free(Kind):
    """A subtree this schema does not check key by key: the library that takes it does (e.g. NeMo's model
    architecture, Lightning's plugins); its mistakes surface when the run is built, named by this key."""

    text: str
    null: bool = True

    def problem(self, value):
        return None

    def describe(self):
        return self.text


# ------------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Key:
    """One row of a command's schema: a dotted key (``*`` for any name of a mapping or index of a list), what its
    value may be, and (optional) what the value means, added to the line in parentheses."""

    path: str
    kind: Kind
    note: str = ""

    def line(self, key: str, value: Any, problem: str) -> str:
        if problem.startswith(f"{key}="):  # a checker's own line (Checked)
            return problem
        return f"{key}={show(value)}: {problem}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Rule:
    """A named cross-key rule: ``check(cfg)`` returns its problems, one line each. Rules run once every key has
    passed its row, so they read well-typed values."""

    name: str
    check: Callable[[DictConfig], list[str]]
    doc: str


REFERENCE = re.compile(r"\$\{[^:{}]+\}")  # ${other.key}: the value is checked where it is set


def references(key: str, expression: str) -> list[str]:
    """The keys an interpolation at ``key`` reads (``${a.b}``, relative ``${.b}``, ``${..c}``, inside resolvers too)."""
    refs = []
    for ref in re.findall(r"\$\{([\w.]+)\}", expression):
        dots = len(ref) - len(ref.lstrip("."))
        refs.append(".".join(key.split(".")[:-dots] + [ref[dots:]]) if dots else ref)
    return refs


def node_at(cfg: DictConfig, key: str):
    """The (unresolved) node at a dotted ``key``."""
    parent, _, leaf = key.rpartition(".")
    container = OmegaConf.select(cfg, parent) if parent else cfg
    return container._get_node(int(leaf) if isinstance(container, ListConfig) else leaf)


def concrete_keys(cfg: Any, pattern: str, prefix: str = "") -> Iterator[str]:
    """The keys of ``cfg`` that ``pattern`` names (``*``: every key of a mapping or index of a list), except those
    whose value is a plain ``${other.key}`` reference (checked where it is set)."""
    head, _, rest = pattern.partition(".")
    if isinstance(cfg, DictConfig):
        names = [str(k) for k in cfg.keys()] if head == "*" else [head] if head in cfg.keys() else []
    elif isinstance(cfg, ListConfig):
        names = [str(i) for i in range(len(cfg))] if head == "*" else []
    else:
        return
    for name in names:
        index = int(name) if isinstance(cfg, ListConfig) else name
        node = cfg._get_node(index)
        if node is None or (node._is_interpolation() and REFERENCE.fullmatch(str(node._value()))):
            continue
        if not rest:
            yield f"{prefix}{name}"
            continue
        try:
            child = cfg[index]
        except OmegaConfBaseException:
            continue  # missing or unresolvable: reported by the row of the key itself
        yield from concrete_keys(child, rest, f"{prefix}{name}.")


def value_at(cfg: DictConfig, key: str) -> Any:
    """The resolved value at ``key`` as plain Python (containers converted)."""
    value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True, throw_on_missing=True)
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


@dataclass(frozen=True)
class Schema:
    """Every key of one command's config and its cross-key rules."""

    name: str
    keys: Sequence[Key]
    rules: Sequence[Rule] = field(default_factory=tuple)

    def row_problems(self, cfg: DictConfig) -> tuple[list[str], list[str]]:
        """(problems of the rows, interpolations that could not be resolved). A key whose value interpolates one
        that has a problem is not reported again (``paths.run_dir`` when ``paths.exp_dir`` is a file)."""
        problems, unresolved, failed = [], [], set()
        for row in self.keys:
            for key in concrete_keys(cfg, row.path):
                node = node_at(cfg, key)
                if node._is_missing():
                    problems.append(f"{key}: required, and not given (add {key}=...)")
                    failed.add(key)
                    continue
                if node._is_interpolation() and failed & set(references(key, str(node._value()))):
                    failed.add(key)
                    continue
                try:
                    value = value_at(cfg, key)
                except UsageError as err:  # a resolver's own check (e.g. data.blend_weights)
                    problems += err.problems
                    failed.add(key)
                    continue
                except OmegaConfBaseException as err:
                    unresolved.append(
                        f"{key}: cannot be resolved ({first_line(err)}): check the file or key it refers to"
                    )
                    continue
                problem = replace_key(row.kind, key).check(value)
                if problem:
                    problems.append(row.line(key, value, problem))
                    failed.add(key)
        return problems, unresolved

    def problems(self, cfg: DictConfig) -> list[str]:
        problems, unresolved = self.row_problems(cfg)
        if problems:
            return problems
        if unresolved:  # reported once the files they read have passed their own rows
            return unresolved
        for rule in self.rules:
            problems += rule.check(cfg)
        return problems

    def check(self, cfg: DictConfig, error: type[UsageError] = UsageError) -> None:
        """Raise every problem of ``cfg`` at once (one line each) as ``error``."""
        raise_problems(self.problems(cfg), error)

    def kinds_of(self) -> dict[str, Kind]:
        return {row.path: row.kind for row in self.keys}


def replace_key(kind: Kind, key: str) -> Kind:
    """``kind`` told which key it checks, where it reports through a library function that names the key."""
    return replace(kind, key=key) if isinstance(kind, Checked) else kind
