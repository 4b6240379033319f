"""Filters: rows that are well formed but not worth training on. Each check raises :class:`Rejected`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from data_prep.errors import Rejected
from data_prep.feasibility import encoder_frames

if TYPE_CHECKING:
    from data_prep.settings import Filters


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


def check_feasible(num_tokens: int | None, duration: float, f: Filters) -> None:
    """Reject a transcript the model cannot emit in the row's encoder frames (the rule of :func:`feasibility`);
    skipped without a tokenizer."""
    if num_tokens is None or f.feasibility.rule is None:
        return
    frames = encoder_frames(duration, f.encoder_frame_s)
    if f.feasibility.rule == "ctc" and frames < num_tokens:
        raise Rejected(
            "rnnt_infeasible",
            f"{frames} encoder frames for {num_tokens} tokens (CTC head: one token per frame at most)",
        )
    if f.feasibility.rule == "rnnt" and num_tokens > f.feasibility.max_symbols * frames:
        raise Rejected(
            "rnnt_infeasible",
            f"{num_tokens} tokens > {f.feasibility.max_symbols} x {frames} encoder "
            f"frames (greedy decoding's max_symbols per frame)",
        )


def apply_filters(text: str, num_tokens: int | None, duration: float, f: Filters) -> None:
    check_duration(duration, f)
    check_speaking_rate(text, duration, f)
    check_feasible(num_tokens, duration, f)
