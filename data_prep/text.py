"""Transcript normalisation: one policy per corpus, applied before any text check."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

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
    char_map: tuple[tuple[str, str], ...] = ()  # text.map as (character, replacement) pairs; "" drops it
    fold_accents: bool = False

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


@lru_cache(maxsize=8)
def _table(char_map: tuple[tuple[str, str], ...]) -> dict[int, str]:
    return str.maketrans(dict(char_map))


def fold_accents(text: str) -> str:
    """Accents off Latin letters (NFKD, then the combining marks on an ASCII letter dropped: "café" -> "cafe");
    letters without an ASCII base (ß, ø) and other scripts' marks stay."""
    kept: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and kept and kept[-1].isascii():
            continue
        kept.append(ch)
    return unicodedata.normalize("NFC", "".join(kept))


def normalise(text: str, policy: TextPolicy) -> str:
    """Return ``text`` normalised under ``policy``; an empty string means nothing usable is left."""
    if policy.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if policy.ascii_punctuation:
        text = text.translate(_ASCII_PUNCTUATION)
    if policy.char_map:
        text = text.translate(_table(policy.char_map))
    # Every accented letter, not only those the tokenizer lacks: the prepared text is then the same whichever
    # tokenizer (or none) is given; a vocabulary with accented letters sets text.fold_accents=false.
    if policy.fold_accents:
        text = fold_accents(text)
    text = _drop_invisible(text)
    if policy.policy == "lower_strip":
        text = text.lower()
        text = _NOT_WORD.sub(" ", text)
        text = _LOOSE_APOSTROPHE.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# The script a language is written in, as the first word of Unicode character names ("LATIN SMALL LETTER A").
# Languages not listed here are not checked.
_SCRIPTS = {
    **dict.fromkeys(
        "en de fr es it pt nl sv da no nb nn fi is et lv lt pl cs sk sl hr bs sq ro hu tr az id ms tl sw vi ca eu gl "
        "ga cy mt af".split(),
        "LATIN",
    ),
    **dict.fromkeys("ru uk be bg mk sr kk ky mn tg".split(), "CYRILLIC"),
    "el": "GREEK",
    **dict.fromkeys("ar fa ur ps".split(), "ARABIC"),
    **dict.fromkeys("he yi".split(), "HEBREW"),
    **dict.fromkeys("hi mr ne".split(), "DEVANAGARI"),
    "ko": "HANGUL",
    "th": "THAI",
    "ka": "GEORGIAN",
    "hy": "ARMENIAN",
}
# More than this share of a transcript's letters outside the language's script: not the corpus language.
MAX_OTHER_SCRIPT_SHARE = 0.1


def lost_by_lower_strip(characters: set[str] | frozenset[str]) -> tuple[str, str]:
    """(capital letters, punctuation) among ``characters`` (a tokenizer's) that ``lower_strip`` takes out of every
    transcript; the in-word apostrophe it keeps is not counted."""
    capitals = "".join(sorted(ch for ch in characters if ch != ch.lower()))
    marks = "".join(sorted(ch for ch in characters if _NOT_WORD.fullmatch(ch)))
    return capitals, marks


def has_words(text: str) -> bool:
    """Whether ``text`` has a letter or a digit (a transcript of punctuation alone says nothing)."""
    return any(ch.isalnum() for ch in text)


def language_script(language: str | None) -> str | None:
    """The script ``language`` (``en``, ``en-US``, ...) is written in, or None when it is not known here."""
    if not language:
        return None
    return _SCRIPTS.get(str(language).strip().lower().replace("_", "-").split("-")[0])


def other_script_letters(text: str, script: str) -> tuple[int, int, str]:
    """(letters outside ``script``, letters, up to 10 of those letters) of ``text``."""
    letters = [ch for ch in text if ch.isalpha()]
    other = [ch for ch in letters if not unicodedata.name(ch, "").startswith(script)]
    return len(other), len(letters), "".join(dict.fromkeys(other))[:10]
