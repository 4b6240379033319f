"""The two ways data preparation says no: stop the whole run, or set one row aside."""

from __future__ import annotations

from recipes.errors import UsageError


class DataPrepError(UsageError):
    """A problem that stops the run before any work: a config error, a missing or unreadable input file,
    or an accounting mismatch at the end. The message is meant to be shown to the user as it is; every
    data_prep entry point reports it as recipes' :class:`UsageError` (one line per problem, exit status 2)."""


# Every reason a row can be set aside for, with the sentence the docs and `rejects.jsonl` readers see.
# A row gets exactly one reason: the first check it fails, in the order the checks run.
REASONS: dict[str, str] = {
    "bad_encoding": "the manifest line is not valid UTF-8",
    "bad_json": "the manifest line is not a JSON object",
    "bad_field": "a required field is missing or has the wrong type (audio path, offset, duration)",
    "empty_text": "the transcript is missing, or has no letter or digit left after normalisation",
    "language_mismatch": "the row's language field differs from the corpus language",
    "script_mismatch": "too many of the transcript's letters are not in the corpus language's script",
    "too_many_unk": "the model's tokenizer maps too large a share of the text to <unk>",
    "duplicate": "the same audio segment appeared earlier in the split",
    "audio_missing": "the audio file does not exist",
    "audio_unreadable": "the audio file's header cannot be read (not audio, or an unsupported format)",
    "audio_empty": "the audio file holds no samples",
    "channel_out_of_range": "the row's channel (or the corpus channel) is not one the audio file has",
    "offset_out_of_range": "the offset is negative or lies at or past the end of the audio",
    "segment_past_end": "offset + duration runs past the end of the audio by more than the tolerance",
    "duration_mismatch": "the declared duration differs from the audio file's own by more than the tolerance",
    "too_short": "the segment is shorter than filters.min_duration",
    "too_long": "the segment is longer than filters.max_duration",
    "chars_per_second_low": "fewer characters per second than filters.min_chars_per_second",
    "chars_per_second_high": "more characters per second than filters.max_chars_per_second",
    "rnnt_infeasible": "the model cannot emit this transcript in its encoder frames (filters.feasibility: with a "
    "CTC head fewer frames than tokens, RNNT only more tokens than max_symbols x frames)",
    "audio_undecodable": "decoding the audio failed (truncated or corrupt file)",
}


class Rejected(Exception):
    """Raised by a per-row check: the row is set aside with ``reason`` (a key of ``REASONS``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def one_line(error: BaseException, limit: int = 300) -> str:
    """A short, single-line description of ``error`` for a rejects entry (lhotse's messages span lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " | ".join(lines[:3]) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
