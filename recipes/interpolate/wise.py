"""Weight interpolation between a base model and its fine-tuned version (WiSE-FT, Wortsman et al. 2022):
``theta(alpha) = (1 - alpha) * theta_base + alpha * theta_finetuned``.

A fine-tuned model usually stays in the base model's basin, so the straight line between the two trades target
gain against general loss smoothly, and often better than any single training run does: one fine-tuning run
gives the whole front, at the price of evaluations only. Each alpha is streamed on a target and a general dev
set at every lookahead; the chosen alpha is the best on target whose general WER stays within a budget
relative to the base (alpha 0 always does), and can be saved as a ``.nemo`` like any checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_interpolate
from recipes.errors import UsageError
from recipes.evaluate.reports import lookahead_key_ms, write_report
from recipes.evaluate.run import stream_sets, summarise
from recipes.evaluate.sets import load_eval_set
from recipes.export.nemo import save_nemo
from recipes.model_files import load_model
from recipes.run_dir import write_atomic
from recipes.streaming.engine import StreamingRecognizer

log = logging.getLogger(__name__)

TABLE, PLOT, REPORT = "interpolation.md", "interpolation.png", "interpolation.json"


def _vocabulary(model) -> list[str] | None:
    tokenizer = getattr(model, "tokenizer", None)
    return list(tokenizer.vocab) if tokenizer is not None and hasattr(tokenizer, "vocab") else None


def check_compatible(base, finetuned, base_name: str, finetuned_name: str) -> None:
    """Same parameters (names and shapes) and the same tokenizer vocabulary, or one line saying which differs."""
    base_sd, ft_sd = base.state_dict(), finetuned.state_dict()
    problem = None
    if set(base_sd) != set(ft_sd):
        differing = sorted(set(base_sd) ^ set(ft_sd))
        problem = f"different parameters ({len(differing)} not in both, e.g. {differing[0]})"
    else:
        for key, value in base_sd.items():
            if value.shape != ft_sd[key].shape:
                problem = f"{key} is {tuple(value.shape)} in the base and {tuple(ft_sd[key].shape)} fine-tuned"
                break
    if problem is None and _vocabulary(base) != _vocabulary(finetuned):
        problem = "different tokenizers"
    if problem:
        raise UsageError(
            f"finetuned={finetuned_name} cannot be interpolated with base={base_name}: {problem}; "
            "give a checkpoint fine-tuned from this base (same architecture and tokenizer)"
        )


def interpolate(
    base_sd: Mapping[str, torch.Tensor], finetuned_sd: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * finetuned`` for floating-point tensors; others (counters) as fine-tuned.
    ``torch.lerp`` returns either end exactly at alpha 0 and 1."""
    return {
        key: torch.lerp(base_sd[key].to(value.dtype), value, alpha) if value.is_floating_point() else value
        for key, value in finetuned_sd.items()
    }


def sweep(
    base,
    finetuned,
    eval_sets: Mapping[str, str],
    lookaheads: Sequence[Sequence[int]],
    alphas: Sequence[float],
    max_utterances: int | None = None,
    batch_size: int = 64,
) -> dict[float, dict]:
    """Streaming WER ``{alpha: {set: {"<ms>ms": entry}}}`` of each interpolated model; ``finetuned`` is used as the
    model to load the weights into (and is left at alpha 1)."""
    sets = [load_eval_set(name, path, max_utterances) for name, path in eval_sets.items()]
    base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    ft_sd = {k: v.detach().clone() for k, v in finetuned.state_dict().items()}
    results = {}
    try:
        for alpha in alphas:
            finetuned.load_state_dict(interpolate(base_sd, ft_sd, alpha))
            results[alpha] = summarise(stream_sets(StreamingRecognizer(finetuned, batch_size), sets, lookaheads))
            log.info(
                "alpha %.2f: %s",
                alpha,
                ", ".join(
                    f"{name}@{key}={entry['wer']:.3f}"
                    for name, by_la in results[alpha].items()
                    for key, entry in by_la.items()
                ),
            )
    finally:
        finetuned.load_state_dict(ft_sd)
    return results


def general_ratios(results: Mapping[float, dict], general_set: str, alpha: float) -> dict[str, float]:
    """General-set WER of ``alpha`` over the base's (alpha 0), per lookahead."""
    base = results[0.0][general_set]
    return {key: entry["wer"] / max(base[key]["wer"], 1e-9) for key, entry in results[alpha][general_set].items()}


def long_form_ratio(results: Mapping[float, dict], long_form_sets: Sequence[str], alpha: float) -> float | None:
    """The worst WER of ``alpha`` over the base's on the long-form sets (continuous streams), over sets and
    lookaheads; None without such sets."""
    ratios = [ratio for name in long_form_sets for ratio in general_ratios(results, name, alpha).values()]
    return max(ratios) if ratios else None


def choose_alpha(
    results: Mapping[float, dict],
    target_set: str,
    general_set: str,
    max_general_ratio: float,
    long_form_sets: Sequence[str] = (),
    max_long_form_ratio: float | None = None,
) -> float:
    """The alpha with the lowest mean target WER over the lookaheads among those whose general WER is at most
    ``max_general_ratio`` times the base's at every lookahead and, with ``long_form_sets``, whose WER on each of
    them is at most ``max_long_form_ratio`` times the base's: a fine-tune that stopped transcribing continuous
    speech is not chosen (the base, alpha 0, always qualifies)."""
    within = [
        a
        for a in results
        if max(general_ratios(results, general_set, a).values()) <= max_general_ratio
        and (not long_form_sets or long_form_ratio(results, long_form_sets, a) <= max_long_form_ratio)
    ]
    return min(within, key=lambda a: (_mean_wer(results[a][target_set]), -a))


def forgetting_flags(results: Mapping[float, dict], long_form_sets: Sequence[str], max_ratio: float | None) -> str:
    """A markdown line naming the alphas whose long-form WER is worse than the base's by more than ``max_ratio``."""
    over = [a for a in sorted(results) if long_form_sets and long_form_ratio(results, long_form_sets, a) > max_ratio]
    if not over:
        return ""
    worst = ", ".join(f"{_label(a)} {long_form_ratio(results, long_form_sets, a):.2f}x" for a in over)
    return f"**Long-form WER worse than the base's by more than {max_ratio}x:** {worst}.\n\n"


def _mean_wer(by_lookahead: Mapping[str, dict]) -> float:
    return sum(e["wer"] for e in by_lookahead.values()) / len(by_lookahead)


def _label(alpha: float) -> str:
    return f"{alpha:g}" + {0.0: " (base)", 1.0: " (fine-tuned)"}.get(alpha, "")


def tradeoff_table(
    results: Mapping[float, dict],
    target_set: str,
    general_set: str,
    chosen: float | None = None,
    long_form_sets: Sequence[str] = (),
) -> str:
    """Markdown: one row per alpha, target and general WER (%) per lookahead, then the target's relative change and
    the general WER's ratio to the base at the worst lookahead (and the long-form sets' worst ratio, with any)."""
    keys = sorted(results[0.0][target_set], key=lookahead_key_ms)
    head = (
        [f"{target_set} @{k}" for k in keys]
        + [f"{general_set} @{k}" for k in keys]
        + ["target change (worst)", "general x base (worst)"]
        + (["long-form x base (worst)"] if long_form_sets else [])
    )
    lines = ["| alpha | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    base_target = results[0.0][target_set]
    for alpha in sorted(results):
        by_target, by_general = results[alpha][target_set], results[alpha][general_set]
        change = max(by_target[k]["wer"] / max(base_target[k]["wer"], 1e-9) - 1 for k in keys)
        ratio = max(general_ratios(results, general_set, alpha).values())
        cells = (
            [f"{100 * by_target[k]['wer']:.1f}" for k in keys]
            + [f"{100 * by_general[k]['wer']:.1f}" for k in keys]
            + [f"{100 * change:+.0f} %", f"{ratio:.2f}"]
            + ([f"{long_form_ratio(results, long_form_sets, alpha):.2f}"] if long_form_sets else [])
        )
        label = _label(alpha) + (" **chosen**" if alpha == chosen else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_front(
    results: Mapping[float, dict], target_set: str, general_set: str, path: str | Path, chosen: float | None = None
) -> Path:
    """Target WER against general WER, one point per alpha and one line per lookahead; base, fine-tuned and the
    chosen alpha marked."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    alphas = sorted(results)
    keys = sorted(results[0.0][target_set], key=lookahead_key_ms)
    cmap = colormaps["viridis"]
    for index, key in enumerate(keys):
        xs = [100 * results[a][general_set][key]["wer"] for a in alphas]
        ys = [100 * results[a][target_set][key]["wer"] for a in alphas]
        color = cmap(index / max(len(keys) - 1, 1))
        ax.plot(xs, ys, marker=".", color=color, label=f"lookahead {key}")
        for alpha, x, y in zip(alphas, xs, ys):
            if alpha in (0.0, 1.0) or alpha == chosen:
                marker = {0.0: "s", 1.0: "*"}.get(alpha, "o")
                ax.plot(
                    [x],
                    [y],
                    marker=marker,
                    markersize=10 if marker == "*" else 7,
                    color=color,
                    markerfacecolor="none" if alpha == chosen and alpha not in (0.0, 1.0) else color,
                )
            if index == len(keys) - 1:
                ax.annotate(f"{alpha:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    ax.set_xlabel(f"{general_set} streaming WER (%)")
    ax.set_ylabel(f"{target_set} streaming WER (%)")
    title = "alpha: 0 = base (square), 1 = fine-tuned (star)"
    ax.set_title(title + (f", chosen {chosen:g} (ring)" if chosen not in (None, 0.0, 1.0) else ""), fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path = Path(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    return path


def write_outputs(
    results: Mapping[float, dict],
    target_set: str,
    general_set: str,
    chosen: float,
    output_dir: str | Path,
    header: str = "",
    long_form_sets: Sequence[str] = (),
) -> dict[str, Path]:
    """``interpolation.json`` (every alpha's report), ``interpolation.md`` (the table) and ``interpolation.png``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(
        {"chosen_alpha": chosen, "alphas": {str(a): {"sets": s} for a, s in results.items()}}, output_dir / REPORT
    )
    table = output_dir / TABLE
    text = tradeoff_table(results, target_set, general_set, chosen, long_form_sets)
    write_atomic(table, lambda tmp: tmp.write_text(f"{header}{text}\n\n![target vs general]({PLOT})\n"))
    return {
        "report": report,
        "table": table,
        "plot": plot_front(results, target_set, general_set, output_dir / PLOT, chosen),
    }


def run(cfg: DictConfig) -> float:
    """Sweep, write the table, plot and report, export the chosen alpha; returns it."""
    check_interpolate(cfg)
    sets = OmegaConf.to_container(cfg.sets)
    alphas = sorted({0.0, 1.0, *(float(a) for a in cfg.alphas)})
    base, finetuned = load_model(cfg.base), load_model(cfg.finetuned)
    check_compatible(base, finetuned, cfg.base, cfg.finetuned)
    lookaheads = OmegaConf.to_container(cfg.lookaheads) if cfg.lookaheads else finetuned.encoder.att_context_size_all
    results = sweep(base, finetuned, sets, lookaheads, alphas, cfg.max_utterances, cfg.batch_size)
    long_form = list(cfg.long_form_sets or [])
    chosen = (
        float(cfg.alpha)
        if cfg.alpha is not None
        else choose_alpha(
            results, cfg.target_set, cfg.general_set, cfg.max_general_ratio, long_form, cfg.max_long_form_ratio
        )
    )
    if chosen not in results:
        raise UsageError(f"alpha={chosen}: not among the alphas evaluated ({alphas})")
    header = (
        f"# WiSE-FT interpolation: base={cfg.base}, finetuned={cfg.finetuned}\n\n"
        f"Streaming WER (%), as written; chosen alpha {chosen:g} (lowest mean {cfg.target_set} WER with "
        f"{cfg.general_set} <= {cfg.max_general_ratio}x base at every lookahead"
        + (f" and {', '.join(long_form)} <= {cfg.max_long_form_ratio}x base" if long_form else "")
        + f"{'' if cfg.alpha is None else ', set by alpha='}).\n\n"
        + forgetting_flags(results, long_form, cfg.max_long_form_ratio)
    )
    outputs = write_outputs(results, cfg.target_set, cfg.general_set, chosen, cfg.output_dir, header, long_form)
    print(outputs["table"].read_text())
    if cfg.export:
        finetuned.load_state_dict(interpolate(base.state_dict(), finetuned.state_dict(), chosen))
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        save_nemo(finetuned, Path(cfg.export).resolve())
        print(f"alpha {chosen:g} saved to {cfg.export}")
    return chosen
