"""Choices a library keeps in a registry (NeMo's optimizers and schedulers, Lightning's precisions), read from the
library once per installed version and cached on disk: importing NeMo takes ~10 s, a config check should not."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import Enum
from importlib import import_module, metadata
from pathlib import Path
from typing import Any, get_args


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
