"""Channels of multi-channel recordings in NeMo manifests: which one a row's cut is made of.

A row may name its channel (``channel``, or NeMo's ``channel_selector`` when it is an index); rows that do not
follow the corpus policy (``corpus.channel``):

- ``mix``: every channel, down-mixed at the loudest channel's level (``recipes.transcribe.channels``);
- a channel index: that channel;
- ``split``: one cut per channel, each with its own transcript field (``corpus.channel_text_fields``, e.g. the
  agent's and the customer's side of a call); such a line counts as one row per channel.
"""

from __future__ import annotations

from data_prep.errors import DataPrepError, Rejected

MIX, SPLIT = "mix", "split"
# The fields that say which channel a row is; they locate the audio, so they are not kept as custom fields.
CHANNEL_FIELDS = ("channel", "channel_selector")


def corpus_channel(value, text_fields) -> tuple[str | int, tuple[str, ...]]:
    """``corpus.channel`` and ``corpus.channel_text_fields`` checked: (policy, transcript field per channel)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        policy = value
    elif value in (MIX, SPLIT):
        policy = value
    else:
        raise DataPrepError(
            f"corpus.channel={value}: give mix, split or a channel index (0 = the first channel), "
            f"for the rows that do not name their channel"
        )
    fields = tuple(text_fields or ())
    if policy == SPLIT and (len(fields) < 2 or not all(isinstance(f, str) and f for f in fields)):
        raise DataPrepError(
            f"corpus.channel_text_fields={list(fields)}: corpus.channel=split needs the transcript field of each "
            f"channel, e.g. [agent_text, customer_text]"
        )
    if policy != SPLIT and fields:
        raise DataPrepError(
            f"corpus.channel_text_fields={list(fields)}: only for corpus.channel=split (got channel={policy})"
        )
    return policy, fields


def row_channel(fields: dict) -> int | None:
    """The channel a NeMo row names, or None. ``channel_selector`` that is not an index (a list, "average") is
    NeMo's own mixing instruction: it leaves the row to the corpus policy."""
    value = fields.get("channel")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not float(value).is_integer():
            raise Rejected("bad_field", f"channel must be a channel index 0, 1, ... (got {value!r})")
        return int(value)
    value = fields.get("channel_selector")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def channel_rows(fields: dict, policy: str | int, text_fields: tuple[str, ...], text_field: str) -> list:
    """[(channel or None for all, transcript field)] for one NeMo row: one entry, or one per channel (split)."""
    channel = row_channel(fields)
    if channel is not None:
        return [(channel, text_field)]
    if policy == SPLIT:
        return list(enumerate(text_fields))
    return [(None if policy == MIX else policy, text_field)]
