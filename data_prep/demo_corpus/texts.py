"""The demo's sentences: general English and a radio-traffic target domain, from seeded templates."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

DOMAINS = ("general", "target")
SPLITS = ("train", "dev")

# Shared by both domains, except that the target domain says "niner" for nine, as on the radio.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# --------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------


def pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _maybe(rng: np.random.Generator, p: float, text: str) -> str:
    return text if rng.random() < p else ""


def _join(*parts: str) -> str:
    return " ".join(" ".join(parts).split())


_G_SUBJECTS = (
    "i",
    "you",
    "we",
    "they",
    "she",
    "he",
    "my sister",
    "my brother",
    "our neighbor",
    "the teacher",
    "my friend",
    "the children",
)
_G_VERBS = (
    ("bring", "brought"),
    ("buy", "bought"),
    ("find", "found"),
    ("make", "made"),
    ("clean", "cleaned"),
    ("open", "opened"),
    ("carry", "carried"),
    ("paint", "painted"),
    ("fix", "fixed"),
    ("wash", "washed"),
    ("move", "moved"),
    ("sell", "sold"),
    ("want", "wanted"),
    ("need", "needed"),
    ("see", "saw"),
    ("forget", "forgot"),
    ("borrow", "borrowed"),
    ("drop", "dropped"),
    ("like", "liked"),
    ("take", "took"),
)
_G_NOUNS = (
    ("book", "books"),
    ("cup", "cups"),
    ("apple", "apples"),
    ("chair", "chairs"),
    ("window", "windows"),
    ("bottle", "bottles"),
    ("shirt", "shirts"),
    ("box", "boxes"),
    ("key", "keys"),
    ("phone", "phones"),
    ("lamp", "lamps"),
    ("basket", "baskets"),
    ("bicycle", "bicycles"),
    ("sandwich", "sandwiches"),
    ("jacket", "jackets"),
    ("umbrella", "umbrellas"),
    ("plate", "plates"),
    ("egg", "eggs"),
    ("orange", "oranges"),
    ("letter", "letters"),
    ("picture", "pictures"),
    ("shoe", "shoes"),
    ("hat", "hats"),
    ("flower", "flowers"),
)
_G_ADJECTIVES = (
    "red",
    "blue",
    "green",
    "yellow",
    "small",
    "big",
    "old",
    "new",
    "warm",
    "cold",
    "heavy",
    "bright",
    "soft",
    "clean",
    "dirty",
    "little",
    "pretty",
    "broken",
    "empty",
    "funny",
)
_G_PLACES = (
    "kitchen",
    "garden",
    "market",
    "school",
    "library",
    "office",
    "bakery",
    "beach",
    "museum",
    "park",
    "river",
    "house",
    "shop",
    "cinema",
)
# Past or present times only: most templates that take one are in the past tense.
_G_TIMES = (
    "today",
    "yesterday",
    "this morning",
    "this evening",
    "last night",
    "on monday",
    "on tuesday",
    "on wednesday",
    "on thursday",
    "on friday",
    "on saturday",
    "on sunday",
    "after lunch",
    "before dinner",
)
_G_ACTIVITIES = ("playing", "reading", "cooking", "sleeping", "walking", "working", "singing", "swimming")
_G_FEELINGS = ("tired", "hungry", "busy", "late", "happy", "thirsty", "bored", "sorry")
_G_SPOTS = (
    "on the table",
    "in the kitchen",
    "under the chair",
    "near the window",
    "in the garden",
    "in my bag",
    "at the door",
)
_G_DEGREE = ("very", "really", "quite", "too", "so")
_G_BE_SUBJECTS = ("i'm", "we're", "she's", "they're", "he's", "you're")


def _with_article(article: str, phrase: str) -> str:
    if article == "a" and phrase[0] in "aeiou":
        article = "an"
    return _join(article, phrase)


def _g_object(rng: np.random.Generator) -> str:
    singular, plural = pick(rng, _G_NOUNS)
    adjective = _maybe(rng, 0.5, pick(rng, _G_ADJECTIVES))
    if rng.random() < 0.4:
        count = pick(rng, NUMBER_WORDS[2:])
        return _join(pick(rng, (count, "some", "the", "my")), adjective, plural)
    return _with_article(pick(rng, ("the", "a", "my", "your", "our")), _join(adjective, singular))


def _general_sentence(rng: np.random.Generator) -> str:
    verb, past = pick(rng, _G_VERBS)
    singular, plural = pick(rng, _G_NOUNS)
    adjective = pick(rng, _G_ADJECTIVES)
    templates: tuple[Callable[[], str], ...] = (
        lambda: _join(pick(rng, _G_SUBJECTS), past, _g_object(rng), _maybe(rng, 0.5, pick(rng, _G_TIMES))),
        lambda: _join("the", singular, "is", _maybe(rng, 0.6, pick(rng, _G_DEGREE)), adjective),
        lambda: _join("the", plural, "are", _maybe(rng, 0.6, pick(rng, _G_DEGREE)), adjective),
        lambda: _join("let's", verb, "the", plural, _maybe(rng, 0.4, pick(rng, ("tomorrow", "after lunch")))),
        lambda: _join("i", pick(rng, ("don't", "can't", "won't", "didn't")), verb, _g_object(rng)),
        lambda: _join("it's", pick(rng, NUMBER_WORDS[1:]), "o'clock", _maybe(rng, 0.4, "already")),
        lambda: _join("meet me at the", pick(rng, _G_PLACES), "at", pick(rng, NUMBER_WORDS[1:]), "o'clock"),
        lambda: _join("where is", pick(rng, ("my", "the", "your")), _maybe(rng, 0.5, adjective), singular),
        lambda: _join("can you", verb, "the", _maybe(rng, 0.4, adjective), singular, _maybe(rng, 0.5, "please")),
        lambda: _join("there are", pick(rng, NUMBER_WORDS[2:]), plural, pick(rng, _G_SPOTS)),
        lambda: _join("there is one", singular, pick(rng, _G_SPOTS)),
        lambda: _join(pick(rng, _G_BE_SUBJECTS), pick(rng, _G_ACTIVITIES), "in the", pick(rng, _G_PLACES)),
        lambda: _join(
            pick(rng, ("my phone number ends with", "the code is", "our room is number")),
            *(pick(rng, NUMBER_WORDS) for _ in range(int(rng.integers(3, 5)))),
        ),
        lambda: _join(pick(rng, _G_SUBJECTS), "went to the", pick(rng, _G_PLACES), pick(rng, _G_TIMES)),
        lambda: _join("did you", verb, _g_object(rng), _maybe(rng, 0.5, pick(rng, _G_TIMES))),
        lambda: _join(
            pick(rng, _G_BE_SUBJECTS),
            _maybe(rng, 0.5, pick(rng, _G_DEGREE)),
            pick(rng, _G_FEELINGS),
            _maybe(rng, 0.5, pick(rng, _G_TIMES)),
        ),
        lambda: _join("that's", _with_article("a", _join(_maybe(rng, 0.7, adjective), singular))),
        lambda: _join(
            "the",
            pick(rng, _G_PLACES),
            pick(rng, ("isn't", "was", "wasn't")),
            pick(rng, _G_DEGREE),
            pick(rng, ("busy", "quiet", "warm", "cold", "big", "small")),
        ),
        lambda: _join("please", verb, _g_object(rng), _maybe(rng, 0.5, "and help me")),
    )
    return pick(rng, templates)()


_T_DIGITS = NUMBER_WORDS[:9] + ("niner",)
_T_LETTERS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
)
_T_AIRLINES = ("speedbird", "shamrock", "ryanair", "united", "delta", "cactus", "american", "easy")
_T_FACILITIES = ("tower", "ground", "approach", "departure", "radar", "center")
_T_READBACKS = ("wilco", "roger", "affirm", "negative", "standby", "say again")
_T_REQUESTS = (
    "request taxi",
    "request descent",
    "request higher",
    "ready for departure",
    "going around",
    "passing flight level one zero zero",
    "established on the localizer",
    "field in sight",
)


def _digits(rng: np.random.Generator, n: int, first_nonzero: bool = False, top: int = 10) -> str:
    out = [_T_DIGITS[int(rng.integers(1 if first_nonzero else 0, top))]]
    out += [_T_DIGITS[int(rng.integers(top))] for _ in range(n - 1)]
    return " ".join(out)


def _t_callsign(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.75:
        return _join(pick(rng, _T_AIRLINES), _digits(rng, int(rng.integers(2, 4)), first_nonzero=True))
    if kind < 0.9:
        letters = " ".join(pick(rng, _T_LETTERS) for _ in range(int(rng.integers(1, 3))))
        return _join("november", _digits(rng, int(rng.integers(1, 3)), first_nonzero=True), letters)
    return _join("cessna", _digits(rng, 3, first_nonzero=True))


def _t_runway(rng: np.random.Generator) -> str:
    number = int(rng.integers(1, 37))
    side = pick(rng, ("", "", "left", "right", "center"))
    return _join(_T_DIGITS[number // 10], _T_DIGITS[number % 10], side)


def _t_flight_level(rng: np.random.Generator) -> str:
    level = int(rng.integers(8, 42)) * 10
    return _join("flight level", _T_DIGITS[level // 100], _T_DIGITS[level // 10 % 10], "zero")


def _t_heading(rng: np.random.Generator) -> str:
    heading = int(rng.integers(1, 73)) * 5
    return " ".join(_T_DIGITS[int(c)] for c in f"{heading:03d}")


def _t_frequency(rng: np.random.Generator) -> str:
    mhz = int(rng.integers(118, 137))
    decimals = [pick(rng, _T_DIGITS)] + ([pick(rng, ("zero", "two", "five", "seven"))] if rng.random() < 0.3 else [])
    return _join(*(_T_DIGITS[int(c)] for c in str(mhz)), "decimal", *decimals)


def _t_altitude(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        return _t_flight_level(rng)
    return _join(_T_DIGITS[int(rng.integers(2, 10))], "thousand", _maybe(rng, 0.3, "five hundred"), "feet")


def _t_speed(rng: np.random.Generator) -> str:
    return _join(_T_DIGITS[int(rng.integers(1, 3))], _T_DIGITS[int(rng.integers(10))], "zero knots")


def _target_sentence(rng: np.random.Generator) -> str:
    # Instructions usually start with the callsign; leaving it out now and then keeps most calls under 4 s.
    callsign = _t_callsign(rng) if rng.random() < 0.8 else ""
    templates: tuple[Callable[[], str], ...] = (
        lambda: _join(callsign, "climb", _maybe(rng, 0.5, "and maintain"), _t_flight_level(rng)),
        lambda: _join(callsign, "descend", _maybe(rng, 0.5, "and maintain"), _t_altitude(rng)),
        lambda: _join(callsign, "turn", pick(rng, ("left", "right")), "heading", _t_heading(rng)),
        lambda: _join(callsign, "contact", pick(rng, _T_FACILITIES), _t_frequency(rng)),
        lambda: _join(callsign, "cleared to land runway", _t_runway(rng)),
        lambda: _join(callsign, "cleared for takeoff runway", _t_runway(rng)),
        lambda: _join(callsign, "squawk", _digits(rng, 4, top=8)),
        lambda: _join(callsign, "hold short", _maybe(rng, 0.5, "of"), "runway", _t_runway(rng)),
        lambda: _join(
            callsign,
            "taxi to holding point",
            pick(rng, _T_LETTERS),
            pick(rng, _T_DIGITS[1:]),
            "via",
            pick(rng, _T_LETTERS),
        ),
        lambda: _join(callsign, "line up and wait runway", _t_runway(rng)),
        lambda: _join(callsign, pick(rng, ("reduce speed", "maintain", "increase speed")), _t_speed(rng)),
        lambda: _join("wind", _t_heading(rng), "degrees", _digits(rng, 2, first_nonzero=True, top=4), "knots"),
        lambda: _join(pick(rng, _T_READBACKS), callsign or _t_callsign(rng)),
        lambda: _join(callsign or _t_callsign(rng), pick(rng, _T_REQUESTS)),
        lambda: _join(
            callsign, "altimeter", pick(rng, ("two niner", "three zero", "one zero", "niner niner")), _digits(rng, 2)
        ),
        lambda: _join(callsign or _t_callsign(rng), "go around"),
        lambda: _join(pick(rng, ("climbing", "descending")), _t_flight_level(rng), callsign),
    )
    return pick(rng, templates)()


SENTENCE_MAKERS: dict[str, Callable[[np.random.Generator], str]] = {
    "general": _general_sentence,
    "target": _target_sentence,
}


# --------------------------------------------------------------------------------------------------------
# Punctuated, capitalised variants (as a PnC model such as Nemotron writes them)
# --------------------------------------------------------------------------------------------------------

PLAIN, PNC = "plain", "pnc"
TEXT_STYLES = (PLAIN, PNC)

_DIGITS = {word: str(i) for i, word in enumerate(NUMBER_WORDS)} | {"niner": "9"}
_CAPITALISED = {
    word: word.capitalize()
    for word in (
        *("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        *_T_AIRLINES,
        *_T_LETTERS,
        "cessna",
    )
} | {"i": "I", "i'm": "I'm"}
_QUESTIONS = ("where is", "can you", "did you")
_READBACKS = {"wilco", "roger", "affirm", "negative", "standby"}


def _radio_numbers(words: list[str]) -> list[str]:
    """Runs of digit words as digits ("flight level three five zero" -> "flight level 350", "one two one decimal
    five" -> "121.5"), except before "thousand" or "hundred", which stay words as they are said."""
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j] in _DIGITS:
            j += 1
        if j > i and (j == len(words) or words[j] not in ("thousand", "hundred")):
            out.append("".join(_DIGITS[w] for w in words[i:j]))
            i = j
        else:
            out.append(words[i])
            i += 1
    for k in range(len(out) - 2, 0, -1):  # "121 decimal 5" -> "121.5"
        if out[k] == "decimal" and out[k - 1].isdigit() and out[k + 1].isdigit():
            out[k - 1 : k + 2] = [f"{out[k - 1]}.{out[k + 1]}"]
    return out


def _callsign_end(words: list[str]) -> int:
    """How many leading words are a callsign (airline or Cessna and its number; November, number, letters), or a
    readback ("roger", "say again"); 0 if neither."""
    if words[:2] == ["say", "again"]:
        return 2
    if words[0] in _READBACKS:
        return 1
    if len(words) > 1 and words[1].isdigit() and words[0] in (*_T_AIRLINES, "cessna", "november"):
        end = 2
        while words[0] == "november" and end < len(words) and end < 4 and words[end] in _T_LETTERS:
            end += 1
        return end
    return 0


def punctuated(text: str, domain: str) -> str:
    """``text`` (a lower-case sentence of ``domain``) punctuated and capitalised: sentence case, proper names, "I";
    a question mark, exclamation mark or full stop; a comma after a leading callsign or readback and before a
    closing "please"; digits for clock times and for the numbers of radio calls."""
    words = text.split()
    if domain == "target":
        words = _radio_numbers(words)
        comma_after = _callsign_end(words) - 1
    else:
        words = [_DIGITS.get(w, w) if nxt == "o'clock" else w for w, nxt in zip(words, [*words[1:], ""])]
        comma_after = len(words) - 2 if words[-1] == "please" else -1
    words = [_CAPITALISED.get(w, w) for w in words]
    if 0 <= comma_after < len(words) - 1:
        words[comma_after] += ","
    stop = "?" if text.startswith(_QUESTIONS) else "!" if text.startswith("let's") else "."
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:] + stop


def sample_texts(
    domain: str,
    n: int,
    rng: np.random.Generator,
    exclude: frozenset[str] = frozenset(),
    style: str = PLAIN,
) -> list[str]:
    """``n`` sentences of ``domain`` (repeats allowed), none of them in ``exclude``; ``style`` ``pnc`` gives each
    one punctuated and capitalised (:func:`punctuated`), drawn from the same random choices as ``plain``."""
    if style not in TEXT_STYLES:
        raise ValueError(f"text style {style!r}: use one of {TEXT_STYLES}")
    make = SENTENCE_MAKERS[domain]
    texts = []
    while len(texts) < n:
        for _ in range(1000):
            text = make(rng)
            if style == PNC:
                text = punctuated(text, domain)
            if text not in exclude:
                break
        else:
            raise RuntimeError(f"the {domain} grammar keeps producing excluded sentences")
        texts.append(text)
    return texts
