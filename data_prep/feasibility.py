"""The feasibility rule: whether an utterance's tokens fit the encoder frames its duration gives, read from the reference model's config."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from data_prep.errors import DataPrepError, one_line
from data_prep.tokenizer import nemo_model_config


@dataclass(frozen=True)
class Feasibility:
    """The rule ``rnnt_infeasible`` applies (``ctc``, ``rnnt`` or None: no check), and why; in summary.json."""

    rule: str | None
    max_symbols: int | None
    why: str


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
        raise DataPrepError(
            f"tokenizer={tokenizer}: its model config cannot be read ({one_line(e)}): give a complete .nemo"
        ) from None
    if max_symbols is None and nemo is not None:
        max_symbols = ((nemo.get("decoding") or {}).get("greedy") or {}).get("max_symbols")
    if rule == "auto":
        if nemo is None:
            raise DataPrepError(
                f"filters.feasibility=auto reads the model's heads from tokenizer=<.nemo>, but "
                f"tokenizer={tokenizer} is not a .nemo: set filters.feasibility=ctc (model with a CTC "
                f"head) or rnnt (RNNT only), or give the model's .nemo"
            )
        model_class = str(nemo.get("target", "")).rsplit(".", 1)[-1]
        has_ctc = nemo.get("aux_ctc") is not None or "CTC" in model_class
        rule, why = (
            ("ctc", f"{tokenizer.name} ({model_class}) has a CTC head")
            if has_ctc
            else ("rnnt", f"{tokenizer.name} ({model_class}) has no CTC head")
        )
    else:
        why = f"filters.feasibility={rule}"
    if rule == "rnnt" and not (isinstance(max_symbols, int) and max_symbols > 0):
        raise DataPrepError(
            f"filters.max_symbols={max_symbols}: the rnnt rule needs greedy decoding's max_symbols "
            f"(a positive integer), read from tokenizer=<.nemo> when it is one: give "
            f"filters.max_symbols=<n>"
        )
    return Feasibility(rule, max_symbols if rule == "rnnt" else None, why)
