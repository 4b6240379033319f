"""Filters: rows that are well formed but not worth training on. Each check raises :class:`Rejected`."""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from data_prep.errors import DataPrepError, Rejected, one_line
from data_prep.tokenizer import nemo_model_config

if TYPE_CHECKING:
    from data_prep.settings import Filters


@dataclass(frozen=True)
class Feasibility:
    """The rule ``rnnt_infeasible`` applies (``ctc``, ``rnnt`` or None: no check), and why; in summary.json."""

    rule: str | None
    max_symbols: int | None
    why: str


def check_unk_share(unk_chars: int, chars: int, unk_surfaces: list[str], max_share: float) -> None:
    """Reject when more than ``max_share`` of the (non-space) characters come out of the tokenizer as <unk>."""
    share = unk_chars / chars if chars else 0.0
    if share > max_share:
        shown = " ".join(sorted(set(unk_surfaces)))[:80]
        raise Rejected("too_many_unk", f"{share:.1%} of the characters map to <unk> ({shown})")


def check_duration(duration: float, f: Filters) -> None:
    if duration < f.min_duration:
        raise Rejected("too_short", f"{duration:.2f}s < {f.min_duration}s")
    if duration > f.max_duration:
        raise Rejected("too_long", f"{duration:.2f}s > {f.max_duration}s")


def check_speaking_rate(text: str, duration: float, f: Filters) -> None:
    """Characters per second, spaces included, of the normalised transcript."""
    rate = len(text) / duration
    if rate < f.min_chars_per_second:
        raise Rejected("chars_per_second_low", f"{rate:.1f} chars/s < {f.min_chars_per_second}")
    if rate > f.max_chars_per_second:
        raise Rejected("chars_per_second_high", f"{rate:.1f} chars/s > {f.max_chars_per_second}")


def encoder_frames(duration: float, frame_s: float) -> int:
    """Encoder output frames for ``duration`` seconds (rounded down: the conservative side)."""
    return int(duration / frame_s + 1e-9)


def feasibility(tokenizer: Path | None, rule: str, max_symbols: int | None) -> Feasibility:
    """Which transcripts the model can emit in a row's encoder frames. ``auto`` follows the reference model
    (``tokenizer`` given as its ``.nemo``): a CTC head emits at most one token per frame, so frames >= tokens;
    a pure RNNT (the released Nemotron model) emits several per frame, up to greedy decoding's ``max_symbols``.
    Raises :class:`DataPrepError` when the rule cannot be known."""
    if tokenizer is None:
        return Feasibility(None, None, "no tokenizer: token counts unknown, the check is skipped")
    try:
        nemo = nemo_model_config(tokenizer) if tokenizer.suffix == ".nemo" else None
    except (tarfile.TarError, OSError, yaml.YAMLError) as e:
        raise DataPrepError(f"tokenizer={tokenizer}: its model config cannot be read ({one_line(e)}): give a "
                            f"complete .nemo") from None
    if max_symbols is None and nemo is not None:
        max_symbols = ((nemo.get("decoding") or {}).get("greedy") or {}).get("max_symbols")
    if rule == "auto":
        if nemo is None:
            raise DataPrepError(f"filters.feasibility=auto reads the model's heads from tokenizer=<.nemo>, but "
                                f"tokenizer={tokenizer} is not a .nemo: set filters.feasibility=ctc (model with a CTC "
                                f"head) or rnnt (RNNT only), or give the model's .nemo")
        model_class = str(nemo.get("target", "")).rsplit(".", 1)[-1]
        has_ctc = nemo.get("aux_ctc") is not None or "CTC" in model_class
        rule, why = ("ctc", f"{tokenizer.name} ({model_class}) has a CTC head") if has_ctc else \
            ("rnnt", f"{tokenizer.name} ({model_class}) has no CTC head")
    else:
        why = f"filters.feasibility={rule}"
    if rule == "rnnt" and not (isinstance(max_symbols, int) and max_symbols > 0):
        raise DataPrepError(f"filters.max_symbols={max_symbols}: the rnnt rule needs greedy decoding's max_symbols "
                            f"(a positive integer), read from tokenizer=<.nemo> when it is one: give "
                            f"filters.max_symbols=<n>")
    return Feasibility(rule, max_symbols if rule == "rnnt" else None, why)


def check_feasible(num_tokens: int | None, duration: float, f: Filters) -> None:
    """Reject a transcript the model cannot emit in the row's encoder frames (the rule of :func:`feasibility`);
    skipped without a tokenizer."""
    if num_tokens is None or f.feasibility.rule is None:
        return
    frames = encoder_frames(duration, f.encoder_frame_s)
    if f.feasibility.rule == "ctc" and frames < num_tokens:
        raise Rejected("rnnt_infeasible", f"{frames} encoder frames for {num_tokens} tokens (CTC head: one token "
                                          f"per frame at most)")
    if f.feasibility.rule == "rnnt" and num_tokens > f.feasibility.max_symbols * frames:
        raise Rejected("rnnt_infeasible", f"{num_tokens} tokens > {f.feasibility.max_symbols} x {frames} encoder "
                                          f"frames (greedy decoding's max_symbols per frame)")


def apply_filters(text: str, num_tokens: int | None, duration: float, f: Filters) -> None:
    check_duration(duration, f)
    check_speaking_rate(text, duration, f)
    check_feasible(num_tokens, duration, f)
