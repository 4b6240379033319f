"""The export stage of a run, as ``conf/export.yaml`` describes it: pick or average a checkpoint, write the checked
``.nemo``, and optionally the ONNX files with their parity report."""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_export
from recipes.evaluate.sets import load_eval_set
from recipes.export.checkpoints import (
    AVERAGED_DIR,
    RankBy,
    average_checkpoints,
    best_checkpoints,
    last_checkpoints,
    report_checkpoint,
    run_config,
    run_dev_sets,
)
from recipes.export.nemo import apply_choices, save_checked
from recipes.export.onnx import export_onnx
from recipes.export.onnx_streaming import compare_runtimes, runtime_table
from recipes.model_files import load_model, resolve_checkpoint
from recipes.streaming.geometry import lookahead_ms

log = logging.getLogger(__name__)

PARITY_REPORT = "parity.json"
EXPORT_RECORD = "export.json"  # in the run directory: what the last export wrote, and the command that wrote it


def rank_by(cfg: DictConfig) -> RankBy:
    """``cfg.rank_by`` with the run's first dev set and default lookahead filled in where null."""
    run = run_config(cfg.run_dir)
    sets = list(run.callbacks.checkpoint.eval_sets or {})
    name = cfg.rank_by.set or (sets[0] if sets else None)
    ms = cfg.rank_by.lookahead_ms or lookahead_ms(run.model.att_context_size[0])
    return RankBy(name, int(ms), cfg.rank_by.metric)


def average(cfg: DictConfig) -> tuple[Path, list[Path]]:
    """Average the checkpoints ``cfg.average`` selects into ``<run_dir>/averaged/``; returns it and its inputs."""
    num = int(cfg.average.num)
    if cfg.average.select == "last":
        paths, name = last_checkpoints(cfg.run_dir, num), f"last{num}"
    else:
        by = rank_by(cfg)
        paths, name = best_checkpoints(cfg.run_dir, by, num), f"best{num}-{by.set}-{by.lookahead_ms}ms"
    return average_checkpoints(paths, Path(cfg.run_dir) / AVERAGED_DIR / f"{name}.ckpt"), paths


def chosen_checkpoint(cfg: DictConfig, averaged: Path | None) -> Path:
    if cfg.checkpoint == "averaged":
        return averaged
    if cfg.checkpoint == "best":
        return best_checkpoints(cfg.run_dir, rank_by(cfg), 1)[0]
    return resolve_checkpoint(cfg.run_dir, cfg.checkpoint)


def check_sets(cfg: DictConfig):
    if cfg.check.data is not None:
        return [load_eval_set("check", cfg.check.data, cfg.check.max_utterances)]
    return run_dev_sets(cfg.run_dir, cfg.check.max_utterances)


def run(cfg: DictConfig) -> dict:
    """Returns what was written: ``{"checkpoint", "ranked_by", "averaged", "nemo", "onnx", "parity"}`` (paths, the
    ranking that chose the checkpoint; None if not)."""
    check_export(cfg)  # config mistakes, before any model is loaded (recipes/checks/stages.py)
    averaged, inputs = average(cfg) if cfg.average.select else (None, [])
    checkpoint = chosen_checkpoint(cfg, averaged)
    model = load_model(str(checkpoint))
    if averaged is not None:  # streamed and reported like any checkpoint (with the model loaded once, if exported)
        chosen = model if checkpoint == averaged else None
        report_checkpoint(cfg.run_dir, averaged, {"averaged_from": [str(p) for p in inputs]}, chosen)
    decoding = OmegaConf.to_container(cfg.nemo.decoding) if cfg.nemo.decoding else None
    lookahead = list(cfg.nemo.default_lookahead) if cfg.nemo.default_lookahead else None
    apply_choices(model, lookahead, decoding)
    sets = check_sets(cfg)
    nemo = save_checked(model, cfg.nemo.output, sets[0].audios, cfg.nemo.fp16_weights)
    ranked = cfg.checkpoint == "best" or (cfg.checkpoint == "averaged" and cfg.average.select == "best")
    written = {
        "checkpoint": str(checkpoint),
        "ranked_by": dataclasses.asdict(rank_by(cfg)) if ranked else None,  # the WER that chose it, if one did
        "averaged": str(averaged) if averaged else None,
        "nemo": str(nemo),
        "onnx": None,
        "parity": None,
    }
    if cfg.onnx.output_dir:
        out = Path(cfg.onnx.output_dir)
        lookaheads = OmegaConf.to_container(cfg.onnx.lookaheads) if cfg.onnx.get("lookaheads") else None
        export_onnx(model, out, lookaheads, int8=cfg.onnx.int8)
        parity = compare_runtimes(model, out, sets, lookaheads, sherpa=cfg.onnx.sherpa)
        (out / PARITY_REPORT).write_text(json.dumps(parity, indent=1))
        print(runtime_table(parity))
        mismatches = sum(e["token_mismatches"] for by in parity.values() for e in by.values())
        if mismatches:
            raise RuntimeError(
                f"{out}: onnxruntime tokens differ from the PyTorch engine's on {mismatches} "
                f"utterance-lookaheads (see {out / PARITY_REPORT})"
            )
        written.update(onnx=str(out), parity=str(out / PARITY_REPORT))
    command = "python -m recipes.export " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (Path(cfg.run_dir) / EXPORT_RECORD).write_text(json.dumps({**written, "command": command}, indent=1))
    return written
