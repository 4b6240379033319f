"""A command's schema: its rows (a dotted key, the kind of its value, a note) and its named cross-key rules, checked
on the composed config; every problem one line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recipes.errors import UsageError, first_line, raise_problems
from recipes.schema.kinds import Checked, Kind, show


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
