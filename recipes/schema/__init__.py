"""The config schema's parts: what a value may be (``kinds``: a type with its range or choices; ``paths``: a path of
some kind; ``registry``: choices read from a library), a key's row and the named cross-key rules (``rows``), and the
check of a composed config.

One schema checking the composed DictConfig, not structured configs: conf/*.yaml stay the one place for the defaults
and their comments, and a check reports every mistake at once with its fix (OmegaConf's structured configs stop at
the first type error and know no ranges, paths or library registries).

Each command's table of keys lives beside its rules: ``recipes/checks/`` for the recipes and the Slurm submitter,
``data_prep/checks.py`` for data preparation; this package is the mechanism they share."""

from recipes.schema.kinds import (
    Bool,
    Checked,
    ClassPath,
    Either,
    Free,
    Int,
    Kind,
    ListOf,
    Lookaheads,
    MapOf,
    Number,
    OneOf,
    Range,
    Str,
    Target,
    is_int,
    is_number,
    show,
)
from recipes.schema.paths import CUTS_FIX, PathKind, cuts_problem
from recipes.schema.registry import Registry, registry_names
from recipes.schema.rows import Key, Rule, Schema, concrete_keys, node_at, references, value_at

__all__ = [
    "CUTS_FIX",
    "Bool",
    "Checked",
    "ClassPath",
    "Either",
    "Free",
    "Int",
    "Key",
    "Kind",
    "ListOf",
    "Lookaheads",
    "MapOf",
    "Number",
    "OneOf",
    "PathKind",
    "Range",
    "Registry",
    "Rule",
    "Schema",
    "Str",
    "Target",
    "concrete_keys",
    "cuts_problem",
    "is_int",
    "is_number",
    "node_at",
    "references",
    "registry_names",
    "show",
    "value_at",
]
