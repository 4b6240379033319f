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

from data_prep.channels import corpus_channel
from data_prep.errors import DataPrepError
from data_prep.feasibility import Feasibility, feasibility
from data_prep.tarred import TarredShards, tarred_shards
from data_prep.text import POLICIES, TextPolicy

INPUT_FORMATS = ("auto", "nemo", "lhotse", "tsv")
SHAR_AUDIO_FORMATS = ("flac", "wav", "opus", "mp3", "original")
FEASIBILITY_RULES = ("auto", "ctc", "rnnt")
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


def _number(cfg: Mapping, key: str, where: str, minimum: float | None = None) -> float:
    value = cfg.get(key)
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool),
        f"{where}.{key} must be a number (got {value!r})",
    )
    if minimum is not None:
        _require(value >= minimum, f"{where}.{key} must be >= {minimum} (got {value})")
    return float(value)


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
    name = cfg.get("name")
    _require(isinstance(name, str) and name.strip() != "", "corpus.name must be a non-empty string")
    _require(
        "/" not in name and name not in (".", "..", "blends"), f"corpus.name {name!r} cannot be used as a folder name"
    )
    corpus_root = cfg.get("audio_root")
    if corpus_root is not None:
        corpus_root = Path(corpus_root)
        _require(corpus_root.is_dir(), f"corpus.audio_root is not a directory: {corpus_root}")
    splits = cfg.get("splits")
    _require(isinstance(splits, Mapping) and len(splits) > 0, "corpus.splits must map split names to lists of inputs")
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
    where = "filters"
    rule = cfg.get("feasibility", "auto")
    _require(
        rule in FEASIBILITY_RULES, f"filters.feasibility must be one of {', '.join(FEASIBILITY_RULES)} (got {rule!r})"
    )
    f = Filters(
        min_duration=_number(cfg, "min_duration", where, 0.0),
        max_duration=_number(cfg, "max_duration", where, 0.0),
        min_chars_per_second=_number(cfg, "min_chars_per_second", where, 0.0),
        max_chars_per_second=_number(cfg, "max_chars_per_second", where, 0.0),
        max_unk_share=_number(cfg, "max_unk_share", where, 0.0),
        encoder_frame_s=_number(cfg, "encoder_frame_s", where, 0.0),
        dedupe=bool(cfg.get("dedupe", True)),
        feasibility=feasibility(tokenizer, rule, cfg.get("max_symbols")),
    )
    _require(f.min_duration < f.max_duration, "filters.min_duration must be below filters.max_duration")
    _require(
        f.min_chars_per_second < f.max_chars_per_second,
        "filters.min_chars_per_second must be below filters.max_chars_per_second",
    )
    _require(f.max_unk_share <= 1.0, "filters.max_unk_share is a share: between 0 and 1")
    _require(f.encoder_frame_s > 0, "filters.encoder_frame_s must be positive")
    return f


def resolve_config(cfg: DictConfig | Mapping) -> dict:
    """The config as plain containers, every interpolation resolved (raises :class:`DataPrepError`)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:  # an unresolved interpolation or a missing (???) value
        raise DataPrepError(f"config error: {e}".splitlines()[0]) from None
    resolved.pop("hydra", None)
    return resolved


def settings_from_cfg(cfg: DictConfig | Mapping) -> PrepSettings:
    """Check the composed ``prepare`` config and return typed settings (raises :class:`DataPrepError`)."""
    resolved = resolve_config(cfg)

    text_cfg = resolved.get("text") or {}
    _require(
        text_cfg.get("policy") in POLICIES,
        f"text.policy must be one of {', '.join(POLICIES)} (got {text_cfg.get('policy')!r})",
    )
    text = TextPolicy(
        policy=text_cfg["policy"],
        nfkc=bool(text_cfg.get("nfkc", True)),
        ascii_punctuation=bool(text_cfg.get("ascii_punctuation", True)),
    )

    tokenizer = resolved.get("tokenizer")
    if tokenizer is not None:
        tokenizer = Path(tokenizer)
        _require(
            tokenizer.exists(),
            f"tokenizer not found: {tokenizer} (give a .nemo, a .model or a tokenizer dir, or tokenizer=null)",
        )

    audio_cfg = resolved.get("audio") or {}
    sample_rate = audio_cfg.get("sample_rate")
    _require(
        isinstance(sample_rate, int) and sample_rate > 0,
        f"audio.sample_rate must be a positive integer (got {sample_rate!r})",
    )
    shar_cfg = resolved.get("shar") or {}
    shar_format = shar_cfg.get("audio_format")
    _require(
        shar_format in SHAR_AUDIO_FORMATS,
        f"shar.audio_format must be one of {', '.join(SHAR_AUDIO_FORMATS)} (got {shar_format!r})",
    )
    shard_size = shar_cfg.get("shard_size")
    _require(
        isinstance(shard_size, int) and shard_size > 0,
        f"shar.shard_size must be a positive integer (got {shard_size!r})",
    )
    audio = AudioChecks(
        sample_rate=sample_rate,
        duration_tolerance=_number(resolved.get("validation") or {}, "duration_tolerance", "validation", 0.0),
        shar_format=shar_format,
        filters=_filters(resolved.get("filters") or {}, tokenizer),
        telephone=_number(resolved.get("augment") or {"telephone": 0.0}, "telephone", "augment", 0.0),
    )
    _require(audio.telephone <= 1.0, "augment.telephone is a share of the rows: between 0 and 1")

    workers = resolved.get("num_workers")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _require(
        isinstance(workers, int) and workers > 0, f"num_workers must be a positive integer or null (got {workers!r})"
    )

    buckets = (resolved.get("bins") or {}).get("num_buckets")
    _require(isinstance(buckets, int) and buckets >= 2, f"bins.num_buckets must be an integer >= 2 (got {buckets!r})")

    out_root = resolved.get("out_root")
    _require(bool(out_root), "out_root must be set")

    part = resolved.get("part") or {}
    count, index = part.get("count", 1), part.get("index", 0)
    _require(isinstance(count, int) and count >= 1, f"part.count must be a positive integer (got {count!r})")
    _require(
        isinstance(index, int) and 0 <= index < count,
        f"part.index must be an integer from 0 to part.count - 1 = {count - 1} (got {index!r})",
    )

    return PrepSettings(
        corpus=_corpus(resolved.get("corpus")),
        out_root=Path(out_root),
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
