"""Screening: the checks that need only the manifest line (fields, text, language, tokenizer, duplicates).

A row that passes becomes a :class:`Candidate`, a small picklable description of one cut that the shard
workers turn into Lhotse objects once they have looked at the audio.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sentencepiece as spm
from lhotse import MonoCut, MultiCut

from data_prep.channels import CHANNEL_FIELDS, channel_rows
from data_prep.errors import Rejected
from data_prep.filters import check_unk_share
from data_prep.readers import RawRow, read_input
from data_prep.settings import CorpusSpec, InputSpec
from data_prep.text import (
    MAX_OTHER_SCRIPT_SHARE,
    TextPolicy,
    has_words,
    language_script,
    normalise,
    other_script_letters,
)
from data_prep.tokenizer import count_unk

# Fields that say where the audio is; everything else on a NeMo line is kept on the cut as a custom field.
_LOCATION_FIELDS = ("audio_filepath", "offset", "duration", *CHANNEL_FIELDS)
# Fields that state the language of the audio or of the transcript, checked against corpus.language.
_LANGUAGE_FIELDS = ("source_lang", "target_lang", "lang", "language")


@dataclass
class Candidate:
    source: str
    line: int
    cut_id: str
    text: str  # normalised
    language: str | None
    custom: dict
    num_tokens: int | None  # None when no tokenizer is configured (the RNNT check is then skipped)
    offset: float  # seconds into the audio
    duration: float | None  # declared; None: up to the end of the audio
    whole_file: bool  # no offset given: the row is the whole file, so a declared duration must match it
    audio_path: str | None = None  # NeMo/TSV rows: the file whose header the worker reads (tarred: the member)
    recording: dict | None = None  # Lhotse rows: the recording as the manifest describes it
    channel: int | list | None = None  # the cut's channel(s); None (NeMo/TSV rows): every channel, down-mixed
    archive: str | None = None  # NeMo tarred rows: the tar file that holds audio_path

    @property
    def location(self) -> str | tuple:
        """The audio the row points into (a file, a tar member, or a Lhotse recording's sources)."""
        if self.archive:
            return f"{self.archive}:{self.audio_path}"
        return self.audio_path or tuple(s["source"] for s in self.recording["sources"])

    @property
    def seconds(self) -> float:
        """Best duration known before the audio is read (for the hours of rows rejected early)."""
        return self.duration or 0.0


@dataclass
class UnkStats:
    """Corpus-level view of what the model's tokenizer cannot represent."""

    chars: int = 0
    unk_chars: int = 0
    tokens: int = 0
    surfaces: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "tokens": self.tokens,
            "characters": self.chars,
            "unk_characters": self.unk_chars,
            "unk_share": round(self.unk_chars / self.chars, 6) if self.chars else 0.0,
            "most_common_unk": dict(self.surfaces.most_common(20)),
        }


@dataclass
class Screened:
    """Phase one of a split: candidates for the workers, rows already set aside, rows read."""

    candidates: list[Candidate]
    rejects: list[dict]
    rows_in: int
    unk: UnkStats


def recording_id(path: str) -> str:
    """A readable, collision-free recording id: the file's stem plus a short hash of its full path."""
    return f"{Path(path).stem}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:8]}"


def reject_entry(source: str, line: int, error: Rejected, seconds: float = 0.0, audio: str | None = None) -> dict:
    return {
        "source": source,
        "line": line,
        "reason": error.reason,
        "detail": error.detail,
        "audio": audio,
        "seconds": round(seconds, 3),
    }


def _number_field(fields: dict, key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Rejected("bad_field", f"{key} must be a finite number (got {value!r})")
    return float(value)


def _language_tag(value: str) -> str:
    return str(value).strip().lower().replace("_", "-").split("-")[0]


def _check_script(cand: Candidate, language: str | None) -> None:
    """Without a tokenizer nothing else notices a transcript in another script (Cyrillic in an English corpus)."""
    script = language_script(language)
    if script is None:
        return
    other, letters, shown = other_script_letters(cand.text, script)
    if letters and other / letters > MAX_OTHER_SCRIPT_SHARE:
        raise Rejected(
            "script_mismatch",
            f"{other} of {letters} letters are not {script.title()} ({shown}) in a {language!r} corpus",
        )


def _check_language(cand: Candidate, expected: str | None) -> None:
    """The row's language fields (and the supervision language of Lhotse rows) must name ``expected``."""
    if expected is None:
        return
    for value in [cand.language, *(cand.custom.get(k) for k in _LANGUAGE_FIELDS)]:
        if value not in (None, "") and _language_tag(value) != _language_tag(expected):
            raise Rejected("language_mismatch", f"{value!r} where the corpus is {expected!r}")


class Screener:
    """Turns the raw rows of one split into candidates or rejects, in input order."""

    def __init__(
        self,
        corpus: CorpusSpec,
        policy: TextPolicy,
        max_unk_share: float,
        dedupe: bool,
        tokenizer: spm.SentencePieceProcessor | None,
    ) -> None:
        self.corpus = corpus
        self.policy = policy
        self.max_unk_share = max_unk_share
        self.dedupe = dedupe
        self.tokenizer = tokenizer
        self.unk = UnkStats()
        self._seen: dict[tuple, str] = {}
        self._ids: set[str] = set()

    def screen_split(self, inputs: list[InputSpec]) -> Screened:
        """Read every input of a split and screen its rows, in order."""
        candidates, rejects, count = [], [], 0
        for spec in inputs:
            for row in read_input(spec):
                for made in self._candidates(spec, row):
                    count += 1
                    declared, audio = 0.0, None
                    try:
                        if isinstance(made, Rejected):
                            raise made
                        declared, audio = made.seconds, made.audio_path
                        self._check_text(made)
                        self._check_duplicate(made)
                    except Rejected as r:
                        rejects.append(reject_entry(row.source, row.line, r, declared, audio))
                    else:
                        candidates.append(made)
        return Screened(candidates, rejects, count, self.unk)

    def _candidates(self, spec: InputSpec, row: RawRow) -> list[Candidate | Rejected]:
        """The rows one manifest line makes (one per channel under corpus.channel=split): each a candidate, or
        the rejection of a malformed one."""
        try:
            if row.error is not None:
                raise row.error
            if row.cut is not None:
                return [self._from_cut(spec, row)]
            channels = channel_rows(
                row.fields, self.corpus.channel, self.corpus.channel_text_fields, self.corpus.text_field
            )
        except Rejected as r:
            return [r]
        made = []
        for channel, text_field in channels:
            try:
                made.append(self._from_fields(spec, row, channel, text_field))
            except Rejected as r:
                made.append(r)
        return made

    def _check_text(self, cand: Candidate) -> None:
        if not has_words(cand.text):
            raise Rejected(
                "empty_text",
                "no letter or digit left after normalisation"
                if cand.text
                else "no transcript left after normalisation",
            )
        _check_language(cand, self.corpus.language)
        _check_script(cand, self.corpus.language)
        self._check_unk(cand)

    # -- building candidates ------------------------------------------------------------------------

    def _from_fields(self, spec: InputSpec, row: RawRow, channel: int | None, text_field: str) -> Candidate:
        fields = row.fields
        audio = fields.get("audio_filepath")
        if not isinstance(audio, str) or not audio.strip():
            raise Rejected("bad_field", "audio_filepath is missing or not a string")
        # Absolute, so that cuts.jsonl.gz works from any working directory; a tarred row names a member.
        path = audio if row.archive else os.path.abspath(spec.audio_root / audio)
        offset = _number_field(fields, "offset")
        duration = _number_field(fields, "duration")
        if duration is not None and duration <= 0:
            raise Rejected("bad_field", f"duration must be positive (got {duration})")
        text = fields.get(text_field)
        text_fields = {self.corpus.text_field, *self.corpus.channel_text_fields}
        custom = {k: v for k, v in fields.items() if k not in _LOCATION_FIELDS and k not in text_fields}
        rec_id = recording_id(f"{row.archive}/{path}" if row.archive else path)
        whole_file = offset is None
        offset = offset or 0.0
        cut_id = rec_id if whole_file else f"{rec_id}_{round(offset * 1000):09d}_{round((duration or 0) * 1000):07d}"
        cut_id += "" if channel is None else f"_ch{channel}"
        return Candidate(
            source=row.source,
            line=row.line,
            cut_id=cut_id,
            text=normalise(text, self.policy) if isinstance(text, str) else "",
            language=fields.get("source_lang") or fields.get("lang") or self.corpus.language,
            custom=custom,
            num_tokens=None,
            offset=offset,
            duration=duration,
            whole_file=whole_file,
            audio_path=path,
            channel=channel,
            archive=row.archive,
        )

    def _from_cut(self, spec: InputSpec, row: RawRow) -> Candidate:
        cut = row.cut
        if not isinstance(cut, (MonoCut, MultiCut)) or not cut.has_recording:
            raise Rejected(
                "bad_field", f"only MonoCut/MultiCut with a recording are supported (got {type(cut).__name__})"
            )
        texts = [s.text for s in sorted(cut.supervisions, key=lambda s: s.start) if s.text]
        recording = cut.recording.to_dict()
        for source in recording["sources"]:
            if source["type"] == "file":
                source["source"] = os.path.abspath(spec.audio_root / source["source"])
        custom = dict(cut.custom or {})
        for sup in cut.supervisions:
            custom.update(sup.custom or {})
        return Candidate(
            source=row.source,
            line=row.line,
            cut_id=cut.id,
            text=normalise(" ".join(texts), self.policy),
            language=next((s.language for s in cut.supervisions if s.language), self.corpus.language),
            custom=custom,
            num_tokens=None,
            offset=cut.start,
            duration=cut.duration,
            whole_file=False,
            recording=recording,
            channel=cut.channel,
        )

    # -- checks -------------------------------------------------------------------------------------

    def _check_unk(self, cand: Candidate) -> None:
        """Tokenize with the model's tokenizer: count tokens (for the RNNT check) and <unk> characters."""
        if self.tokenizer is None:
            return
        num_tokens, unk_surfaces = count_unk(self.tokenizer, cand.text)
        chars = len(cand.text.replace(" ", ""))
        unk_chars = sum(len(s) for s in unk_surfaces)
        self.unk.chars += chars
        self.unk.unk_chars += unk_chars
        self.unk.tokens += num_tokens
        self.unk.surfaces.update(unk_surfaces)
        check_unk_share(unk_chars, chars, unk_surfaces, self.max_unk_share)
        cand.num_tokens = num_tokens

    def _check_duplicate(self, cand: Candidate) -> None:
        where = f"{cand.source}:{cand.line}"
        if self.dedupe:
            key = (
                cand.location,
                round(cand.offset, 3),
                None if cand.duration is None else round(cand.duration, 3),
                str(cand.channel),
            )
            first = self._seen.setdefault(key, where)
            if first != where:
                raise Rejected("duplicate", f"same segment as {first}")
        # Ids must be unique within a split even when dedupe is off or two manifests reuse an id.
        base, n = cand.cut_id, 1
        while cand.cut_id in self._ids:
            n += 1
            cand.cut_id = f"{base}-{n}"
        self._ids.add(cand.cut_id)
