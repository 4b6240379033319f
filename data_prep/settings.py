"""The composed Hydra config, checked and turned into typed settings before any work starts.

Every problem found here is a :class:`DataPrepError` with one message that names the config key or the
file at fault; nothing has been written when it is raised.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from data_prep.channels import corpus_channel
from data_prep.checks import PREPARE
from data_prep.errors import DataPrepError
from data_prep.feasibility import Feasibility, feasibility
from data_prep.tarred import TarredShards, tarred_shards
from data_prep.text import TextPolicy
from recipes.errors import first_line, missing_message

INPUT_FORMATS = ("auto", "nemo", "lhotse", "tsv")
_CUT_TYPES = ("MonoCut", "MultiCut", "MixedCut")


@dataclass(frozen=True)
class InputSpec:
    """One input manifest of a split."""

    path: Path
    format: str  # nemo | lhotse | tsv (resolved from "auto" when the settings are built)
    audio_root: Path  # relative audio paths are resolved against it (default: the manifest's directory)
    supervisions: Path | None = None  # lhotse only: `path` holds recordings, this the supervisions
    tarred: TarredShards | None = None  # nemo_tarred only: its manifests and tar files (data_prep/tarred.py)


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    language: str | None
    text_field: str
    splits: dict[str, list[InputSpec]]
    channel: str | int = "mix"  # rows without a channel of their own: mix | split | an index (data_prep/channels.py)
    channel_text_fields: tuple[str, ...] = ()  # split: the transcript field of each channel


@dataclass(frozen=True)
class Filters:
    min_duration: float
    max_duration: float
    min_chars_per_second: float
    max_chars_per_second: float
    max_unk_share: float
    encoder_frame_s: float
    dedupe: bool
    feasibility: Feasibility


@dataclass(frozen=True)
class AudioChecks:
    """What the per-row audio checks and the Shar writer need; small and picklable for the workers."""

    sample_rate: int
    duration_tolerance: float
    shar_format: str
    filters: Filters
    telephone: float = 0.0  # share of kept rows passed through a phone channel (augment.telephone)


@dataclass(frozen=True)
class PrepSettings:
    corpus: CorpusSpec
    out_root: Path
    text: TextPolicy
    audio: AudioChecks
    shard_size: int
    num_workers: int
    tokenizer: Path | None
    num_buckets: int
    progress: bool
    part: tuple[int, int] = (0, 1)  # (index, count): this run writes only its range of each split's shards
    resolved: dict = field(default_factory=dict, compare=False)  # the config as composed, for summary.json

    @property
    def corpus_dir(self) -> Path:
        return self.out_root / self.corpus.name


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise DataPrepError(message)


def check_readable(path: Path, what: str) -> None:
    """Stop with one message unless ``path`` is a file we can open and read (gzip included)."""
    _require(path.exists(), f"{what} not found: {path}")
    _require(path.is_file(), f"{what} is not a file: {path}")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            f.read(1)
    except (OSError, EOFError) as e:
        raise DataPrepError(f"{what} cannot be read: {path} ({e})") from None


def _sniff_format(path: Path) -> str:
    """nemo or lhotse, from the first JSON object in the file (NeMo rows carry ``audio_filepath``)."""
    if path.name.endswith(".tsv"):
        return "tsv"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                first = json.loads(raw)
            except ValueError:
                return "nemo"  # a broken first line is reported row by row by the NeMo reader
            if isinstance(first, dict) and (
                first.get("type") in _CUT_TYPES or "recording" in first or "supervisions" in first
            ):
                return "lhotse"
            return "nemo"
    return "nemo"


def _input_spec(item: Any, where: str, corpus_root: Path | None) -> InputSpec:
    if isinstance(item, str):
        item = {"path": item}
    _require(isinstance(item, Mapping), f"{where}: an input is a path or a mapping with 'path' (got {item!r})")
    if "tar" in item:  # a NeMo tarred dataset: manifests and tar shards
        return InputSpec(Path(str(item.get("path"))), "nemo_tarred", Path("."), tarred=tarred_shards(item, where))
    unknown = set(item) - {"path", "format", "audio_root", "supervisions"}
    _require(not unknown, f"{where}: unknown input key(s) {sorted(unknown)}")
    _require(bool(item.get("path")), f"{where}: the input has no 'path'")
    path = Path(item["path"])
    fmt = item.get("format") or "auto"
    _require(fmt in INPUT_FORMATS, f"{where}.format must be one of {', '.join(INPUT_FORMATS)} (got {fmt!r})")
    what = f"input manifest ({where})"
    check_readable(path, what)
    supervisions = item.get("supervisions")
    if supervisions is not None:
        _require(fmt in ("auto", "lhotse"), f"{where}: 'supervisions' is only for lhotse inputs")
        supervisions = Path(supervisions)
        check_readable(supervisions, f"supervisions manifest ({where})")
        fmt = "lhotse"
    if fmt == "auto":
        fmt = _sniff_format(path)
    root = item.get("audio_root") or corpus_root or path.parent
    root = Path(root)
    _require(root.is_dir(), f"{where}: audio root is not a directory: {root}")
    return InputSpec(path=path, format=fmt, audio_root=root, supervisions=supervisions)


def _corpus(cfg: Mapping) -> CorpusSpec:
    _require(isinstance(cfg, Mapping), "no corpus selected: run with corpus=<name> (a file in conf/data_prep/corpus/)")
    name, splits = cfg["name"], cfg["splits"]  # checked by the schema (data_prep/checks.py)
    corpus_root = Path(cfg["audio_root"]) if cfg.get("audio_root") is not None else None
    specs = {}
    for split, items in splits.items():
        if isinstance(items, (str, Mapping)):
            items = [items]
        _require(
            isinstance(items, (list, tuple)) and len(items) > 0,
            f"corpus.splits.{split} must be a non-empty list of inputs",
        )
        specs[str(split)] = [
            _input_spec(item, f"corpus.splits.{split}[{i}]", corpus_root) for i, item in enumerate(items)
        ]
    language = cfg.get("language")
    text_field = cfg.get("text_field") or "text"
    channel, channel_text_fields = corpus_channel(cfg.get("channel", "mix"), cfg.get("channel_text_fields"))
    return CorpusSpec(name, language or None, text_field, specs, channel, channel_text_fields)


def _filters(cfg: Mapping, tokenizer: Path | None) -> Filters:
    names = ("min_duration", "max_duration", "min_chars_per_second", "max_chars_per_second", "max_unk_share")
    return Filters(
        **{name: float(cfg[name]) for name in (*names, "encoder_frame_s")},
        dedupe=bool(cfg.get("dedupe", True)),
        feasibility=feasibility(tokenizer, cfg.get("feasibility", "auto"), cfg.get("max_symbols")),
    )


def resolve_config(cfg: DictConfig | Mapping) -> dict:
    """The config as plain containers, every interpolation resolved (raises :class:`DataPrepError`)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:  # a required ??? value not given
        raise DataPrepError(missing_message(e)) from None
    except Exception as e:  # an unresolved interpolation
        raise DataPrepError(
            f"{getattr(e, 'full_key', None) or 'config'}: cannot be resolved ({first_line(e)})"
        ) from None
    resolved.pop("hydra", None)
    return resolved


def settings_from_cfg(cfg: DictConfig | Mapping) -> PrepSettings:
    """Check the composed ``prepare`` config against its schema (``data_prep/checks.py``) and return typed settings
    (raises :class:`DataPrepError`, one line per problem)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    PREPARE.check(cfg, DataPrepError)
    resolved = resolve_config(cfg)
    text_cfg = resolved["text"]
    text = TextPolicy(
        policy=text_cfg["policy"],
        nfkc=bool(text_cfg.get("nfkc", True)),
        ascii_punctuation=bool(text_cfg.get("ascii_punctuation", True)),
        char_map=tuple((text_cfg.get("map") or {}).items()),
        fold_accents=bool(text_cfg.get("fold_accents", False)),
    )
    tokenizer = Path(resolved["tokenizer"]) if resolved.get("tokenizer") is not None else None
    audio = AudioChecks(
        sample_rate=resolved["audio"]["sample_rate"],
        duration_tolerance=float(resolved["validation"]["duration_tolerance"]),
        shar_format=resolved["shar"]["audio_format"],
        filters=_filters(resolved["filters"], tokenizer),
        telephone=float((resolved.get("augment") or {}).get("telephone", 0.0)),
    )
    workers = resolved.get("num_workers")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    part = resolved.get("part") or {}
    index, count = part.get("index", 0), part.get("count", 1)
    shard_size, buckets = resolved["shar"]["shard_size"], resolved["bins"]["num_buckets"]

    return PrepSettings(
        corpus=_corpus(resolved.get("corpus")),
        out_root=Path(resolved["out_root"]),
        text=text,
        audio=audio,
        shard_size=shard_size,
        num_workers=workers,
        tokenizer=tokenizer,
        num_buckets=buckets,
        progress=bool(resolved.get("progress", True)),
        part=(index, count),
        resolved=resolved,
    )
