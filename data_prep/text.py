"""Transcript normalisation: one policy per corpus, applied before any text check."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# pnc: keep punctuation and case (what Nemotron Speech outputs); lower_strip: lowercase, no punctuation.
POLICIES = ("pnc", "lower_strip")

# Typographic punctuation that NFKC leaves alone but tokenizers trained on ASCII text often map to <unk>.
_ASCII_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
    }
)
_SPACE = re.compile(r"\s+")
# Everything that is not a word character, whitespace or apostrophe; underscore counts as punctuation.
_NOT_WORD = re.compile(r"[^\w\s']|_")
# Apostrophes that do not sit between two word characters ("'quoted'" but not "don't").
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


@dataclass(frozen=True)
class TextPolicy:
    policy: str = "pnc"
    nfkc: bool = True
    ascii_punctuation: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"text.policy must be one of {', '.join(POLICIES)} (got {self.policy!r})")


def _drop_invisible(text: str) -> str:
    """Control and format characters (zero-width spaces, BOMs, ...) go; whitespace controls become spaces."""
    out = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            out.append(" " if ch.isspace() else "")
        elif category != "Cf":
            out.append(ch)
    return "".join(out)


def normalise(text: str, policy: TextPolicy) -> str:
    """Return ``text`` normalised under ``policy``; an empty string means nothing usable is left."""
    if policy.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if policy.ascii_punctuation:
        text = text.translate(_ASCII_PUNCTUATION)
    text = _drop_invisible(text)
    if policy.policy == "lower_strip":
        text = text.lower()
        text = _NOT_WORD.sub(" ", text)
        text = _LOOSE_APOSTROPHE.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
