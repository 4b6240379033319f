"""Data preparation's config schemas: every key of ``conf/data_prep/`` (``prepare`` and its corpus files, ``blend``,
``tokenizer``, ``demo_corpus``, ``long_form``) with its type and range or choices, and the cross-key rules; the
mechanism is ``recipes.schema``. Each entry point checks its config with these before it reads or writes anything;
the inputs a corpus lists are checked as they are read (``data_prep.settings``)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from data_prep.demo_corpus.texts import DOMAINS, SPLITS, TEXT_STYLES
from data_prep.errors import DataPrepError
from data_prep.text import POLICIES, lost_by_lower_strip
from recipes.schema import (
    Bool,
    Checked,
    Either,
    Free,
    Int,
    Key,
    ListOf,
    MapOf,
    Number,
    OneOf,
    PathKind,
    Range,
    Rule,
    Schema,
    Str,
)

SHAR_AUDIO_FORMATS = ("flac", "wav", "opus", "mp3", "original")
FEASIBILITY_RULES = ("auto", "ctc", "rnnt")
FOLDER_NAME = Str(pattern=r"(?!\.{1,2}$)(?!blends$)[^/]+", hint="a folder name (no /, not . .. or blends)")
PREPARE_FIRST = "prepare the corpus first (python -m data_prep corpus=...)"
LONG_FORM_MODES = ("joined", "recordings")  # data_prep/long_form.py


def below(low: str, high: str) -> Rule:
    def rule(cfg: DictConfig) -> list[str]:
        a, b = OmegaConf.select(cfg, low), OmegaConf.select(cfg, high)
        return [] if a is None or b is None or a < b else [f"{low}={a}: must be below {high}={b}"]

    return Rule(f"{low.split('.')[-1]}_below_{high.split('.')[-1]}", rule, f"{low} < {high}")


def part_in_count(cfg: DictConfig) -> list[str]:
    index, count = cfg.part.index, cfg.part.count
    if index >= count:
        return [f"part.index={index}: give an integer from 0 to part.count - 1 = {count - 1}"]
    return []


def stream_rows(prefix: str) -> list[Key]:
    """The settings of one set of continuous streams (``data_prep.long_form``, or a corpus's ``long_form.<name>``);
    their defaults are conf/data_prep/long_form.yaml."""
    return [
        Key(f"{prefix}mode", OneOf(LONG_FORM_MODES), "joined: utterances joined | recordings: a recording's segments"),
        Key(f"{prefix}minutes", Number(gt=0), "the most a stream lasts"),
        Key(f"{prefix}streams", Int(lo=1), "joined: how many streams"),
        Key(f"{prefix}gap_s", Range(Number(lo=0)), "joined: seconds of silence between utterances"),
        Key(f"{prefix}seed", Int(lo=0), "joined: the passes' order and the pauses"),
    ]


def long_form_entries(cfg: DictConfig) -> list[str]:
    """A corpus's ``long_form`` entries: known settings only, from one of the corpus's splits, not named as one."""
    splits, problems = list(cfg.corpus.splits), []
    known = ["split", *(row.path.rsplit(".", 1)[-1] for row in stream_rows(""))]
    for name, entry in (cfg.get("long_form") or {}).items():  # absent when a command removes it (~long_form)
        unknown = sorted(set(entry) - set(known))
        if unknown:
            problems.append(f"long_form.{name}.{unknown[0]}: unknown key (use {', '.join(known)})")
        if entry.split not in splits:
            problems.append(f"long_form.{name}.split={entry.split}: not a split of the corpus ({', '.join(splits)})")
        if name in splits:
            problems.append(f"long_form.{name}: the name of a split; give the streams another name")
    return problems


def char_map(value, key: str) -> None:
    """``text.map``: {character: replacement}, one character per key and a string per replacement."""
    if not isinstance(value, dict) or any(len(str(k)) != 1 or not isinstance(v, str) for k, v in value.items()):
        raise DataPrepError(
            f"{key}={value}: give {{character: replacement}}, one character per key and a string per replacement "
            f"('' drops the character), e.g. {{';': ','}}"
        )


def lower_strip_for_pnc_tokenizer(cfg: DictConfig) -> list[str]:
    """``text.policy=lower_strip`` takes out case and punctuation the reference tokenizer can write: the model
    would learn to drop them. Unless ``text.allow_strip_for_pnc_tokenizer`` says it is meant."""
    if cfg.text.policy != "lower_strip" or cfg.text.allow_strip_for_pnc_tokenizer or cfg.tokenizer is None:
        return []
    from data_prep.tokenizer import load_sentencepiece, vocabulary_characters

    try:
        characters = vocabulary_characters(load_sentencepiece(cfg.tokenizer))
    except Exception:  # reported, with its reason, where data prep loads the tokenizer
        return []
    capitals, marks = lost_by_lower_strip(characters)
    if not capitals and not marks:
        return []
    lost = " and ".join(x for x in (capitals and "capitals", marks and f"punctuation ({marks[:20]})") if x)
    return [
        f"text.policy=lower_strip: lowercases and strips punctuation, but tokenizer={cfg.tokenizer} writes {lost}, "
        f"so the model would learn to drop them: use text.policy=pnc with cased, punctuated transcripts, or set "
        f"text.allow_strip_for_pnc_tokenizer=true if dropping them is meant"
    ]


PREPARE = Schema(
    "data_prep",
    [
        Key("corpus.name", FOLDER_NAME, "the corpus is written to <out_root>/<corpus.name>"),
        Key("corpus.language", Str(null=True), "null: no language check"),
        Key("corpus.text_field", Str()),
        Key("corpus.audio_root", PathKind("dir", null=True), "null: each manifest's folder"),
        Key("corpus.channel", Either((OneOf(("mix", "split")), Int(lo=0))), "rows that do not name their channel"),
        Key("corpus.channel_text_fields", ListOf(Str(), null=True), "corpus.channel=split: one per channel"),
        Key("corpus.splits", MapOf(Free(""), nonempty=True), "{split: [inputs]}"),
        Key("corpus.splits.*", Free("the split's inputs, each checked as it is read (docs/data_prep.md)")),
        Key("long_form", MapOf(Free(""), null=True), "{name: settings}: continuous dev streams after the splits"),
        Key("long_form.*", MapOf(Free(""), required=("split",)), "{split, and any of data_prep.long_form's below}"),
        Key("long_form.*.split", Str(), "a split of corpus.splits"),
        *stream_rows("long_form.*."),
        Key("out_root", PathKind("writable_dir")),
        Key("num_workers", Int(lo=1, null=True), "null: one per CPU core"),
        Key("progress", Bool()),
        Key("tokenizer", PathKind("nonempty", "give a .nemo, a .model or a tokenizer dir, or tokenizer=null", True)),
        Key("text.policy", OneOf(POLICIES)),
        Key("text.nfkc", Bool()),
        Key("text.ascii_punctuation", Bool()),
        Key("text.map", Checked(char_map, "{character: replacement}", bad="x", null=True), "before the <unk> check"),
        Key("text.map.*", Free("the replacement ('' drops the character)")),
        Key("text.fold_accents", Bool(), "NFKD, accents off Latin letters (café -> cafe)"),
        Key("text.allow_strip_for_pnc_tokenizer", Bool(), "lower_strip although the tokenizer has case or punctuation"),
        Key("audio.sample_rate", Int(lo=1)),
        Key("augment.telephone", Number(lo=0, hi=1), "a share of the kept rows (0: off)"),
        Key("validation.duration_tolerance", Number(lo=0), "seconds"),
        Key("filters.min_duration", Number(lo=0), "seconds"),
        Key("filters.max_duration", Number(gt=0), "seconds"),
        Key("filters.min_chars_per_second", Number(lo=0)),
        Key("filters.max_chars_per_second", Number(gt=0)),
        Key("filters.max_unk_share", Number(lo=0, hi=1), "a share of the characters"),
        Key("filters.encoder_frame_s", Number(gt=0)),
        Key("filters.feasibility", OneOf(FEASIBILITY_RULES)),
        Key("filters.max_symbols", Int(lo=1, null=True), "null: the .nemo's decoding.greedy.max_symbols"),
        Key("filters.dedupe", Bool()),
        Key("shar.shard_size", Int(lo=1)),
        Key("shar.audio_format", OneOf(SHAR_AUDIO_FORMATS)),
        Key("bins.num_buckets", Int(lo=2)),
        Key("part.index", Int(lo=0)),
        Key("part.count", Int(lo=1)),
    ],
    (
        below("filters.min_duration", "filters.max_duration"),
        below("filters.min_chars_per_second", "filters.max_chars_per_second"),
        Rule("part_in_count", part_in_count, "part.index < part.count"),
        Rule("long_form_entries", long_form_entries, "long_form entries of the corpus's splits, known keys only"),
        Rule(
            "lower_strip_for_pnc_tokenizer",
            lower_strip_for_pnc_tokenizer,
            "text.policy=lower_strip only with a tokenizer without case and punctuation, or with "
            "text.allow_strip_for_pnc_tokenizer=true",
        ),
    ),
)

LONG_FORM = Schema(
    "data_prep.long_form",
    [
        Key("source", PathKind("cuts", PREPARE_FIRST)),
        Key("output_dir", PathKind("writable_dir")),
        *stream_rows(""),
    ],
)

BLEND = Schema(
    "data_prep.blend",
    [
        Key("blend.name", FOLDER_NAME, "the blend is written to <out_root>/blends/<blend.name>"),
        Key("blend.split", Str(), "the prepared split of each corpus that goes into the mix"),
        Key("blend.corpora", ListOf(MapOf(Free(""), required=("corpus", "weight")), min_len=1)),
        Key("blend.corpora.*.corpus", FOLDER_NAME),
        Key("blend.corpora.*.weight", Number(gt=0), "a sampling weight (shares are weight / sum of weights)"),
        Key("out_root", PathKind("dir", "where data prep wrote the corpora")),
        Key("num_buckets", Int(lo=2)),
        Key("seed", Int(lo=0)),
    ],
)

TOKENIZER = Schema(
    "data_prep.train_tokenizer",
    [
        Key("cuts", ListOf(Str(), min_len=1), "prepared cuts manifests"),
        Key("cuts.*", PathKind("cuts", PREPARE_FIRST)),
        Key("out_dir", PathKind("writable_dir")),
        Key("vocab_size", Int(lo=2)),
        Key("model_type", OneOf(("bpe", "unigram"))),
    ],
)


def espeak(voices, variants) -> None:
    from data_prep.demo_corpus.speech import check_voices

    try:
        check_voices(voices, variants)
    except ValueError as err:
        raise DataPrepError(str(err)) from None


def voices(value, key: str) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise DataPrepError(f"{key}={value}: give a non-empty list of eSpeak NG voice names")
    try:
        espeak(value, [])
    except DataPrepError as err:
        raise DataPrepError(f"{key}={value}: {err}: use voices eSpeak NG has") from None


def variants(value, key: str) -> None:
    if not isinstance(value, list) or not value or not all(v is None or isinstance(v, str) for v in value):
        raise DataPrepError(f"{key}={value}: give a non-empty list of eSpeak NG variants ('' = the voice's own)")
    try:
        espeak([], [v or "" for v in value])
    except DataPrepError as err:
        raise DataPrepError(f"{key}={value}: {err}: use variants eSpeak NG has") from None


def known_domains(cfg: DictConfig) -> list[str]:
    problems = [f"domains.{d}: not a demo domain: use {', '.join(DOMAINS)}" for d in cfg.domains if d not in DOMAINS]
    return problems + [
        f"domains.{d}.{s}: not a split: use {', '.join(SPLITS)}"
        for d in cfg.domains
        for s in cfg.domains[d]
        if s not in SPLITS
    ]


DEMO_CORPUS = Schema(
    "data_prep.demo_corpus",
    [
        Key("out_dir", PathKind("writable_dir")),
        Key("seed", Int(lo=0)),
        Key("sample_rate", Int(lo=1)),
        Key("text_style", OneOf(TEXT_STYLES)),
        Key("domains", MapOf(Free(""), nonempty=True), "{domain: {split: utterances}}"),
        Key("domains.*", MapOf(Free(""))),
        Key("domains.*.*", Int(lo=0), "utterances"),
        Key("voices", Checked(voices, "a list of eSpeak NG voices", bad=["no-such-voice"])),
        Key("variants", Checked(variants, "a list of eSpeak NG voice variants ('' = none)", bad=["no-such-variant"])),
        Key("rate_wpm", Range(Int(lo=1)), "words per minute"),
        Key("pitch", Range(Int(lo=0, hi=99))),
        Key("snr_db", Range(Number())),
        Key("silence_s", Range(Number(lo=0))),
        Key("long_recording_fraction", Number(lo=0, hi=1)),
        Key("session_size", Range(Int(lo=1))),
        Key("session_gap_s", Range(Number(lo=0))),
        Key("num_workers", Int(lo=1)),
    ],
    (Rule("known_domains", known_domains, "domains and splits the demo corpus has"),),
)
