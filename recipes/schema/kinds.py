"""What a config value may be: a kind is a type with its range or choices (``Int(lo=1)``, ``OneOf(...)``, a list
of kinds, a lookahead), and says what is wrong with a value and what to do."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from recipes.errors import UsageError
from recipes.schema.registry import Registry


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


@dataclass(frozen=True)
class Checked(Kind):
    """A value checked by a function of the library or recipe that uses it; ``check(value, key)`` raises a
    :class:`UsageError` (its line names the key) or returns nothing."""

    fn: Callable[[Any, str], None]
    text: str
    bad: Any = "/nonexistent/x"
    null: bool = False
    key: str = ""  # the key it checks, set per row (recipes.schema.rows.replace_key)

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
