"""Filters: rows that are well formed but not worth training on. Each check raises :class:`Rejected`."""
from __future__ import annotations

from data_prep.errors import Rejected
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


def encoder_frames(duration: float, frame_s: float) -> int:
    """Encoder output frames for ``duration`` seconds (rounded down: the conservative side)."""
    return int(duration / frame_s + 1e-9)


def check_rnnt(num_tokens: int | None, duration: float, f: Filters) -> None:
    """Fewer encoder frames than tokens: the alignment would need several tokens in one 80 ms frame,
    which in practice means a mis-segmented row; we treat it as untrainable. Skipped without a tokenizer."""
    if num_tokens is None:
        return
    frames = encoder_frames(duration, f.encoder_frame_s)
    if frames < num_tokens:
        raise Rejected("rnnt_infeasible", f"{frames} encoder frames for {num_tokens} tokens")


def apply_filters(text: str, num_tokens: int | None, duration: float, f: Filters) -> None:
    check_duration(duration, f)
    check_speaking_rate(text, duration, f)
    check_rnnt(num_tokens, duration, f)
