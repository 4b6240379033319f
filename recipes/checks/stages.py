"""The schemas of the stages after training: ``recipes.evaluate``, ``recipes.interpolate``, ``recipes.export`` and
its results card, ``recipes.transcribe``, each with its cross-key rules; checked before NeMo is imported."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes.checks.models import untrained_lookaheads
from recipes.errors import UsageError
from recipes.model_files import resolve_checkpoint, resolve_model_file
from recipes.run_dir import RUN_CONFIG
from recipes.schema import (
    Bool,
    Checked,
    Either,
    Free,
    Int,
    Key,
    ListOf,
    Lookaheads,
    MapOf,
    Number,
    OneOf,
    PathKind,
    Rule,
    Schema,
    Str,
    show,
)
from recipes.transcribe.channels import parse_channel


def model_file(value, key: str) -> None:
    resolve_model_file(value, key)


def run_dir(value, key: str) -> None:
    if not (Path(str(value)) / RUN_CONFIG).is_file():
        raise UsageError(f"{key}={value}: no {RUN_CONFIG} there: give the directory of a fine-tuning run")


def cuts_or_sets(value, key: str) -> None:
    """One cuts file, or a mapping {set name: cuts file} (each of those is its own row, ``<key>.*``)."""
    if isinstance(value, dict):
        if not value:
            raise UsageError(f"{key}={{}}: give at least one set, {{name: cuts file}}")
        return
    problem = PathKind("cuts").check(value)
    if problem:
        raise UsageError(f"{key}={show(value)}: {problem}")


MODEL = Checked(model_file, "a .nemo, a run's .ckpt (beside its run_config.yaml) or a pretrained name")
RUN_DIR = Checked(run_dir, "a fine-tuning run's directory (with run_config.yaml)")
CUTS = PathKind("cuts")
SETS = Checked(cuts_or_sets, "a cuts file, or a mapping {set name: cuts file}", null=True)


def data_or_audio(cfg: DictConfig) -> list[str]:
    if (cfg.data is None) == (cfg.audio is None):
        return ["data, audio: give exactly one of data=<cuts file or {name: cuts file}> and audio=<audio file>"]
    return []


def evaluate_lookaheads_trained(cfg: DictConfig) -> list[str]:
    return untrained_lookaheads(cfg, "lookaheads", "model")


EVALUATE = Schema(
    "recipes.evaluate",
    [
        Key("model", MODEL),
        Key("data", SETS),
        Key("data.*", CUTS),
        Key("audio", PathKind("file", "give an audio file (wav, flac, ...)", null=True)),
        Key("channel", Either((OneOf(("mix", "each")), Int(lo=0))), "audio only: mix, each, or a channel index"),
        Key("lookaheads", Lookaheads(null=True), "null: every lookahead the model was trained with"),
        Key("max_utterances", Int(lo=1, null=True), "null: all"),
        Key("batch_size", Int(lo=1)),
        Key("check_offline", Bool()),
        Key("output", PathKind("writable_file", null=True)),
    ],
    (
        Rule("data_or_audio", data_or_audio, "exactly one of data and audio"),
        Rule("lookaheads_trained", evaluate_lookaheads_trained, "lookaheads among those the model was trained with"),
    ),
)


def check_evaluate(cfg: DictConfig, model_file: bool = True) -> None:
    """``recipes.evaluate``: what to score, how, and (``model_file``: the model is given as a file, not built
    already) the model file, before NeMo is imported."""
    if model_file:
        return EVALUATE.check(cfg)
    rows = [row for row in EVALUATE.keys if row.path != "model"]
    rules = [rule for rule in EVALUATE.rules if rule.name != "lookaheads_trained"]
    Schema(EVALUATE.name, rows, rules).check(cfg)


def sets_named(cfg: DictConfig) -> list[str]:
    sets = list(cfg.sets)
    return [
        f"{key}={cfg[key]}: not one of sets ({', '.join(sets)})"
        for key in ("target_set", "general_set")
        if cfg[key] not in sets
    ] + [
        f"long_form_sets={list(cfg.long_form_sets)}: {name} is not one of sets ({', '.join(sets)})"
        for name in cfg.long_form_sets
        if name not in sets
    ]


def alpha_evaluated(cfg: DictConfig) -> list[str]:
    alphas = sorted({0.0, 1.0, *map(float, cfg.alphas)})
    if cfg.alpha is not None and float(cfg.alpha) not in alphas:
        return [f"alpha={cfg.alpha}: not among the alphas evaluated ({show(alphas)}): add it to alphas"]
    return []


def interpolate_lookaheads_trained(cfg: DictConfig) -> list[str]:
    return untrained_lookaheads(cfg, "lookaheads", "finetuned")


INTERPOLATE = Schema(
    "recipes.interpolate",
    [
        Key("base", MODEL),
        Key("finetuned", MODEL),
        Key("alphas", ListOf(Number(lo=0, hi=1), min_len=1), "0 = base, 1 = fine-tuned"),
        Key("sets", MapOf(CUTS, nonempty=True)),
        Key("sets.*", CUTS),
        Key("target_set", Str()),
        Key("general_set", Str()),
        Key("lookaheads", Lookaheads(null=True), "null: every lookahead the fine-tuned model was trained with"),
        Key("max_utterances", Int(lo=1, null=True), "null: all"),
        Key("batch_size", Int(lo=1)),
        Key("max_general_ratio", Number(lo=1), "general WER at most this many times the base's"),
        Key("long_form_sets", ListOf(Str()), "names in sets of continuous streams"),
        Key("max_long_form_ratio", Number(lo=1), "long-form WER at most this many times the base's"),
        Key("alpha", Number(lo=0, hi=1, null=True)),
        Key("output_dir", PathKind("writable_dir")),
        Key("export", PathKind("writable_file", null=True)),
    ],
    (
        Rule("sets_named", sets_named, "target_set and general_set are names in sets"),
        Rule("alpha_evaluated", alpha_evaluated, "alpha is one of the alphas (or 0, 1)"),
        Rule("lookaheads_trained", interpolate_lookaheads_trained, "lookaheads the fine-tuned model was trained with"),
    ),
)


def check_interpolate(cfg: DictConfig) -> None:
    """``recipes.interpolate``'s inputs: the two models and sets, alphas in [0, 1], before NeMo is imported."""
    INTERPOLATE.check(cfg)


def averaged_needs_select(cfg: DictConfig) -> list[str]:
    if cfg.checkpoint == "averaged" and not cfg.average.select:
        return ["checkpoint=averaged: needs average.select=last or best"]
    return []


def checkpoint_found(cfg: DictConfig) -> list[str]:
    if cfg.checkpoint in ("best", "averaged"):
        return []
    try:
        resolve_checkpoint(cfg.run_dir, cfg.checkpoint)
    except UsageError as err:
        return err.problems
    return []


def default_lookahead_trained(cfg: DictConfig) -> list[str]:
    lookahead = cfg.nemo.default_lookahead
    trained = OmegaConf.load(Path(cfg.run_dir) / RUN_CONFIG).model.att_context_size
    if lookahead is not None and list(lookahead) not in [list(pair) for pair in trained]:
        return [f"nemo.default_lookahead={show(lookahead)}: the run trained {show(trained)} only: use one of those"]
    return []


EXPORT = Schema(
    "recipes.export",
    [
        Key("run_dir", RUN_DIR),
        Key("checkpoint", Str(), "a file name in <run_dir>/checkpoints, a path, best or averaged"),
        Key("rank_by.set", Str(null=True), "null: the run's first dev set"),
        Key("rank_by.lookahead_ms", Int(lo=80, null=True), "null: the run's default lookahead"),
        Key("rank_by.metric", OneOf(("wer", "wer_normalized"))),
        Key("average.select", OneOf(("last", "best"), null=True), "null: no averaging"),
        Key("average.num", Int(lo=2), "averaging needs at least 2 checkpoints"),
        Key("nemo.output", PathKind("writable_file")),
        Key("nemo.fp16_weights", Bool()),
        Key("nemo.default_lookahead", Lookaheads(single=True, null=True)),
        Key("nemo.decoding", Free("merged into NeMo's decoding config, checked by NeMo")),
        Key("check.data", PathKind("cuts", null=True), "null: the run's dev sets"),
        Key("check.max_utterances", Int(lo=1)),
        Key("onnx.output_dir", PathKind("writable_dir", null=True), "null: no ONNX"),
        Key("onnx.lookaheads", Lookaheads(null=True), "null: every lookahead of the model"),
        Key("onnx.int8", Bool()),
        Key("onnx.sherpa", Bool()),
    ],
    (
        Rule("averaged_needs_select", averaged_needs_select, "checkpoint=averaged only with average.select"),
        Rule("checkpoint_found", checkpoint_found, "the checkpoint is a complete .ckpt of the run"),
        Rule("default_lookahead_trained", default_lookahead_trained, "nemo.default_lookahead among the run's"),
    ),
)


def check_export(cfg: DictConfig) -> None:
    """``recipes.export``'s config, before any model is loaded."""
    EXPORT.check(cfg)


REPORT = "write it with python -m recipes.evaluate ... output=<file>"

CARD = Schema(
    "recipes.export.card",
    [
        Key("run_dir", RUN_DIR),
        Key("base_report", PathKind("file", REPORT)),
        Key("exported_report", PathKind("file", REPORT)),
        Key("parity", PathKind("file", null=True), "null: <run_dir>/onnx/parity.json when there"),
        Key("commands", ListOf(Str())),
        Key("output", PathKind("writable_file", null=True), "null: <run_dir>/RESULTS.md"),
        Key("long_form_sets", ListOf(Str(), null=True), "null: the run's callbacks.checkpoint.long_form_sets"),
        Key("max_long_form_ratio", Number(lo=1), "flagged above this many times the base's WER"),
    ],
)


def check_card(cfg: DictConfig) -> None:
    CARD.check(cfg)


def jsonl_output(value, key: str) -> None:
    problem = None if str(value).endswith(".jsonl") else "give a .jsonl file"
    problem = problem or PathKind("writable_file").check(value)
    if problem:
        raise UsageError(f"{key}={value}: {problem}")


def channel_choice(value, key: str) -> None:
    parse_channel(value, key)


def cuda_there(cfg: DictConfig) -> list[str]:
    import torch  # already imported by every recipe that gets here (no NeMo)

    if cfg.device == "cuda" and not torch.cuda.is_available():
        return ["device=cuda: no CUDA device here: use device=auto or device=cpu"]
    return []


TRANSCRIBE = Schema(
    "recipes.transcribe",
    [
        Key("model", MODEL),
        Key("audio", PathKind("nonempty", "give an audio file, a folder or a manifest")),
        Key("output", Checked(jsonl_output, "a .jsonl file in a directory that can be written", bad="out.txt")),
        Key(
            "lookahead",
            Either((Int(lo=1), Lookaheads(single=True)), null=True),
            "ms (80, 160, 560, 1120 for the released model) or [left, right]; null: the model's default",
        ),
        Key("channel", Checked(channel_choice, "mix, each, or a channel index", bad="left")),
        Key("batch_size", Int(lo=1)),
        Key("device", OneOf(("auto", "cpu", "cuda"))),
        Key("captions", OneOf(("srt", "vtt"), null=True), "null: no captions"),
        Key("captions_dir", PathKind("writable_dir", null=True), "null: <output's name>_captions/ beside the output"),
        Key("progress", Bool()),
    ],
    (Rule("cuda_there", cuda_there, "device=cuda only where a CUDA device is"),),
)


def check_transcribe(cfg: DictConfig) -> None:
    """``recipes.transcribe``'s config, before NeMo is imported."""
    TRANSCRIBE.check(cfg)
