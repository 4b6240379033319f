"""The results card of a fine-tuning run: ``<run_dir>/RESULTS.md``, written from what the run left on disk.

    python -m recipes.export.card run_dir=exp/demo_finetune base_report=exp/demo/base_wer.json \
        exported_report=exp/demo/finetuned_wer.json

Base model, data (hours per corpus, blend weights, rejects), training summary (steps, learning rate, lookahead weights,
devices), streaming WER per set and lookahead of the exported model beside the base model's (as written and
normalised), latency per lookahead, the ONNX runtimes' WER when exported, the run's WER-vs-latency plot, the commands
that reproduce it, and the environment (package versions, git commit, hardware).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Sequence

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_card
from recipes.errors import UsageError, exit_on_usage_error, run_hydra_main
from recipes.evaluate.reports import (
    LONG_FORM_CAPTION,
    RUN_PLOT,
    latency_table,
    long_form_table,
    lookahead_key_ms,
    read_run_reports,
    split_long_form,
    wer_table,
)
from recipes.run_dir import write_atomic

CARD = "RESULTS.md"
PACKAGES = ("torch", "nemo_toolkit", "lightning", "lhotse", "hydra-core", "onnx", "onnxruntime", "sherpa-onnx", "jiwer")


def _read_json(path: str | Path, key: str) -> dict:
    if not Path(path).is_file():
        raise UsageError(f"{key}={path}: no such report (write it with python -m recipes.evaluate ... output=...)")
    return json.loads(Path(path).read_text())


def data_section(run: DictConfig) -> list[str]:
    """Blend weights (as trained: ``data.blend_weights`` where set) and hours per corpus (``blend.json``), rows kept
    and rejected per split (``summary.json``)."""
    lines = ["## Data", ""]
    blend_path = Path(run.data.get("blend_dir") or "") / "blend.json"
    if blend_path.is_file():
        blend = json.loads(blend_path.read_text())
        trained = run.data.get("blend_weights") or {}
        lines += [
            f"Training blend `{blend['name']}` ({blend_path})"
            + (", re-weighted by `data.blend_weights`" if trained else "")
            + ":",
            "",
            "| corpus | weight | cuts | hours |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {c['corpus']} | {trained.get(c['corpus'], c['weight'])} | {c['cuts']} | {c['hours']:.2f} |"
            for c in blend["corpora"]
        ]
        lines += [""]
        corpora = [c["corpus"] for c in blend["corpora"]]
    else:
        corpora = []
    rows = []
    for corpus in corpora:
        summary_path = Path(run.data.prepared_dir) / corpus / "summary.json"
        if not summary_path.is_file():
            continue
        for split, s in json.loads(summary_path.read_text())["splits"].items():
            reasons = ", ".join(f"{k} {v}" for k, v in s.get("rejected_by_reason", {}).items()) or "-"
            rows.append(
                f"| {corpus} | {split} | {s['rows']['kept']} | {s['hours']['kept']:.2f} | "
                f"{s['rows']['rejected']} | {reasons} |"
            )
    if rows:
        lines += [
            "Prepared corpora (`data_prep`):",
            "",
            "| corpus | split | kept | hours | rejected | reasons |",
            "|---|---|---:|---:|---:|---|",
            *rows,
            "",
        ]
    return lines


def training_section(run: DictConfig, run_dir: Path) -> list[str]:
    reports = read_run_reports(run_dir / "checkpoints")
    trainer, model = run.trainer, run.model
    init = run.get("init_from_file")
    return [
        "## Training",
        "",
        f"- base model: `{model.init_from or 'from scratch'}`"
        + (f" (revision {init.revision or 'main'}: `{init.path}`, SHA-256 `{init.sha256}`)" if init else ""),
        f"- steps: {trainer.max_steps} (last checkpoint report: step {reports[-1]['step'] if reports else '-'}), "
        f"seed {run.get('seed')}",
        f"- learning rate {model.optim.lr}, {model.optim.get('sched', {}).get('name', 'no schedule')} "
        f"(warmup {model.optim.get('sched', {}).get('warmup_steps', '-')} steps), "
        f"batches of {run.data.train_ds.get('batch_duration', '-')} s of audio",
        f"- lookaheads {list(map(list, model.att_context_size))} with training weights "
        f"{list(model.att_context_probs) if model.att_context_probs else 'equal'}",
        f"- devices: {trainer.get('accelerator', '-')} x {trainer.get('devices', '-')}, "
        f"{trainer.get('num_nodes', 1)} node(s), precision {trainer.get('precision', '-')}",
        "",
    ]


def trained_with_section(run: DictConfig) -> list[str]:
    """Loss (FastEmit, clamp), SpecAugment, decoding, preprocessor and tokenizer the run trained with, each with its
    source: the base checkpoint, the architecture (from scratch) or an override of the run's config."""
    from recipes.finetune.trained_with import keep_trained_with, settings_table
    from recipes.model_files import nemo_config

    model, recorded = run.model, run.get("init_from_file")
    lines = ["## Trained with", ""]
    if model.init_from:
        path = Path(recorded.path if recorded else model.init_from)
        if not path.is_file():
            return lines + [f"(not listed: the base model `{path}` is not on this machine)", ""]
        base = nemo_config(path, "model.init_from")
    else:
        base = model.architecture
    _, settings = keep_trained_with(base, model)
    return lines + [
        "What the base model was trained with is kept unless the run set it (`model.loss`, `model.spec_augment`, "
        "`model.decoding`); preprocessor and tokenizer are always the model's.",
        "",
        *settings_table(settings),
        "",
    ]


def ranking_line(run_dir: Path) -> list[str]:
    """Which WER chose the exported checkpoint, as ``<run_dir>/export.json`` records it; nothing without a record."""
    from recipes.export.pipeline import EXPORT_RECORD  # imports NeMo: not before the config is checked

    record = run_dir / EXPORT_RECORD
    if not record.is_file():
        return []
    written = json.loads(record.read_text())
    by = written.get("ranked_by")
    if by is None:
        return [f"Exported `{Path(written['checkpoint']).name}`: no WER ranking chose it.", ""]
    what = "normalised WER" if by["metric"] == "wer_normalized" else "WER as written"
    return [f"Checkpoints ranked by {what} (`{by['metric']}`) on `{by['set']}` at {by['lookahead_ms']} ms.", ""]


def wer_section(base: dict, exported: dict, exported_name: str) -> list[str]:
    rows = {f"base (`{base.get('model', 'base')}`)": base["sets"], f"exported (`{exported_name}`)": exported["sets"]}
    short = {label: split_long_form(sets)[0] for label, sets in rows.items()}
    long_form = long_form_table(rows)
    long_form_lines = [LONG_FORM_CAPTION, "", long_form, ""] if long_form else []
    return [
        "## Streaming WER (%)",
        "",
        "Real cache-aware streaming, one column per dev set and chunk latency.",
        "",
        "As written (case and punctuation count):",
        "",
        wer_table(short),
        "",
        "Normalised (Whisper English normaliser):",
        "",
        wer_table(short, key="wer_normalized"),
        "",
        *long_form_lines,
        "## Latency and speed of the exported model",
        "",
        latency_table(exported["sets"]),
        "",
    ]


def long_form_section(base: dict, exported: dict, names: Sequence[str], max_ratio: float | None) -> list[str]:
    """WER on continuous streams (``data_prep.long_form``) of the exported model beside the base's, per set and
    lookahead; a ratio above ``max_ratio`` is flagged: the fine-tune lost long-form speech the base transcribed."""
    names = [name for name in names if name in base["sets"] and name in exported["sets"]]
    if not names:
        return []
    keys = sorted(exported["sets"][names[0]], key=lookahead_key_ms)
    rows, flagged = [], []
    for name in names:
        cells = []
        for key in keys:
            ours, theirs = exported["sets"][name][key]["wer"], base["sets"][name][key]["wer"]
            ratio = ours / max(theirs, 1e-9)
            over = max_ratio is not None and ratio > max_ratio
            flagged += [f"{name} @{key} ({ratio:.2f}x)"] if over else []
            cells.append(f"{100 * ours:.1f} / {100 * theirs:.1f} ({ratio:.2f}x{', over' if over else ''})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if flagged:
        verdict = f"**Long-form WER worse than the base's by more than {max_ratio}x:** {', '.join(flagged)}."
    else:
        verdict = f"No long-form set is worse than the base's by more than {max_ratio}x." if max_ratio else ""
    return [
        "## Long-form speech vs the base",
        "",
        "Streaming WER (%) on continuous streams, exported / base (ratio).",
        "",
        "| set | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
        *rows,
        "",
        verdict,
        "",
    ]


def onnx_section(parity_path: Path) -> list[str]:
    from recipes.export.onnx_streaming import runtime_table

    if not parity_path.is_file():
        return []
    return [
        "## ONNX runtimes",
        "",
        f"`{parity_path.parent}` (sherpa-onnx layout; `{parity_path.name}` has the "
        "figures): WER (%) and real-time factor per runtime on the check utterances, and the utterances whose "
        "onnxruntime tokens differ from the PyTorch engine's.",
        "",
        runtime_table(json.loads(parity_path.read_text())),
        "",
    ]


def commands(run_dir: Path, run: DictConfig, reports: dict[str, str], extra: list[str]) -> list[str]:
    """The commands behind the card: ``extra`` (e.g. data preparation), the fine-tuning command (from the overrides
    Hydra recorded in ``<run_dir>/.hydra``), the export command (``<run_dir>/export.json``) and the evaluations that
    wrote the reports (their model, the run's dev sets, the report path)."""
    from recipes.export.pipeline import EXPORT_RECORD  # imports NeMo: not before the config is checked

    lines = list(extra)
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        lines.append(" ".join(["python -m recipes.finetune", *map(shlex.quote, OmegaConf.load(overrides))]))
    record = run_dir / EXPORT_RECORD
    if record.is_file():
        lines.append(json.loads(record.read_text())["command"])
    dev_sets = {**(run.callbacks.checkpoint.eval_sets or {}), **(run.callbacks.checkpoint.get("long_form_sets") or {})}
    for path, report in reports.items():
        sets = {name: dev_sets.get(name, "?") for name in json.loads(Path(path).read_text())["sets"]}
        data = "{" + ", ".join(f"{k}: {v}" for k, v in sets.items()) + "}"
        lines.append(f"python -m recipes.evaluate model={report} data={shlex.quote(data)} output={path}")
    return lines


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return commit + (" (uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_section() -> list[str]:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [
        "## Environment",
        "",
        "```",
        f"python {sys.version.split()[0]} on {platform.platform()}",
        ", ".join(versions),
        f"git commit {_git_commit()}",
        f"CPU {_cpu_name()} x {os.cpu_count()}; GPU {', '.join(gpus) if gpus else 'none'}",
        "```",
        "",
    ]


def long_form_names(run: DictConfig, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else list(run.callbacks.checkpoint.get("long_form_sets") or {})


def write_card(
    run_dir: str | Path,
    base_report: str | Path,
    exported_report: str | Path,
    extra_commands: list[str] = (),
    output: str | Path | None = None,
    parity: str | Path | None = None,
    long_form_sets: Sequence[str] | None = None,
    max_long_form_ratio: float | None = None,
) -> Path:
    """Write ``<run_dir>/RESULTS.md`` (or ``output``); returns its path. ``long_form_sets``: names of continuous-stream
    sets in the reports (None: the run's ``callbacks.checkpoint.long_form_sets``), flagged over
    ``max_long_form_ratio`` x the base's WER."""
    from recipes.export.checkpoints import run_config  # imports NeMo: not before the config is checked

    run_dir = Path(run_dir)
    run = run_config(run_dir)
    base, exported = _read_json(base_report, "base_report"), _read_json(exported_report, "exported_report")
    parity = Path(parity) if parity else run_dir / "onnx" / "parity.json"
    plot = run_dir / "checkpoints" / RUN_PLOT
    lines = [
        f"# Results card: {run.get('run_name', run_dir.name)}",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python -m recipes.export.card`. "
        f"Exported model: `{exported.get('model', '-')}`.",
        "",
        *ranking_line(run_dir),
        *training_section(run, run_dir),
        *trained_with_section(run),
        *data_section(run),
        *wer_section(base, exported, exported.get("model", "exported")),
        *long_form_section(base, exported, long_form_names(run, long_form_sets), max_long_form_ratio),
        *onnx_section(parity),
    ]
    if plot.is_file():
        lines += [
            "## Streaming WER vs latency, every checkpoint",
            "",
            f"![WER vs latency]({os.path.relpath(plot, Path(output or run_dir / CARD).parent)})",
            "",
        ]
    reports = {str(base_report): base.get("model", "-"), str(exported_report): exported.get("model", "-")}
    lines += [
        "## Commands",
        "",
        "```bash",
        *commands(run_dir, run, reports, extra_commands),
        "```",
        "",
        *environment_section(),
    ]
    path = Path(output) if output else run_dir / CARD
    write_atomic(path, lambda tmp: tmp.write_text("\n".join(lines)))
    return path


@hydra.main(config_path="../../conf", config_name="card", version_base="1.3")
@exit_on_usage_error("recipes.export.card")
def main(cfg: DictConfig) -> None:
    check_card(cfg)
    long_form = None if cfg.long_form_sets is None else list(cfg.long_form_sets)
    print(
        write_card(
            cfg.run_dir,
            cfg.base_report,
            cfg.exported_report,
            list(cfg.commands),
            cfg.output,
            cfg.parity,
            long_form,
            cfg.max_long_form_ratio,
        )
    )


if __name__ == "__main__":
    run_hydra_main(main, "recipes.export.card")
