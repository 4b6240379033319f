"""The text policy for a model that writes case and punctuation: what its tokenizer cannot encode, counted per corpus;
the character map and accent folding, applied before the <unk> check and recorded; lower_strip refused for such a
tokenizer unless the user opts in. Real SentencePiece tokenizers, real data prep runs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from omegaconf import OmegaConf, open_dict

from data_prep.checks import PREPARE
from data_prep.demo_corpus.texts import sample_texts
from data_prep.prepare import prepare_corpus
from data_prep.tokenizer import load_sentencepiece, train_sentencepiece, vocabulary_characters
from recipes.config import CONF, compose_config
from tests.support.models import BASE_MODEL
from tests.support.runs import run_cli
from tests.test_data_prep import make_cfg, split_out, tone, write_lines

DEFAULT_MAP = {";": ",", "(": "", ")": "", "[": "", "]": ""}


def train_pnc_tokenizer(out_dir: Path) -> Path:
    """A tokenizer trained on the demo corpus's punctuated, capitalised text: capitals, digits and ! ' , . ?, like
    the released model's (no ; ( ) # @ ~, no accented letters)."""
    rng = np.random.default_rng(0)
    texts = [*sample_texts("general", 200, rng, style="pnc"), *sample_texts("target", 200, rng, style="pnc")]
    return train_sentencepiece(texts, out_dir, 128)


@pytest.fixture(scope="module")
def pnc_tokenizer(tmp_path_factory) -> Path:
    path = train_pnc_tokenizer(tmp_path_factory.mktemp("pnc_tokenizer"))
    chars = vocabulary_characters(load_sentencepiece(path))
    assert {"A", "Z", ",", ".", "?", "'"} <= chars and not {";", "(", "@", "#", "~", "é"} & chars
    return path


def manifest(tmp_path: Path, name: str, texts: list[str]) -> str:
    rows = []
    for i, text in enumerate(texts):
        tone(tmp_path / "audio" / f"{name}{i}.wav", 3.0)
        rows.append({"audio_filepath": f"audio/{name}{i}.wav", "duration": 3.0, "text": text})
    return str(write_lines(tmp_path / f"{name}.jsonl", rows))


def kept_texts(tmp_path: Path, split: str) -> list[str]:
    return [c.supervisions[0].text for c in CutSet.from_file(split_out(tmp_path, split) / "cuts.jsonl.gz")]


def test_unencodable_characters_counted_per_corpus_after_the_map(tmp_path, pnc_tokenizer, caplog):
    splits = {
        "train": [manifest(tmp_path, "train", ["Hello; world (again).", "Meet me @ the café, number #5."])],
        "dev": [manifest(tmp_path, "dev", ["Mail me @ home [now]?", "Is it about ~ 7, Zoë?"])],
    }
    tokenizer = [f"tokenizer={pnc_tokenizer}", "filters.feasibility=ctc", "text.policy=pnc"]
    with caplog.at_level(logging.INFO, logger="data_prep.prepare"):
        summary = prepare_corpus(make_cfg(tmp_path, splits, *tokenizer, "filters.max_unk_share=0.2"))

    # ; ( ) [ ] mapped, é and ë folded: what is left for <unk> is @ # ~, counted over both splits
    assert summary["text"]["unencodable_characters"] == {"@": 2, "#": 1, "~": 1}
    assert summary["splits"]["train"]["unencodable_characters"] == {"@": 1, "#": 1}
    assert summary["splits"]["dev"]["unencodable_characters"] == {"@": 1, "~": 1}
    assert summary["text"]["map"] == DEFAULT_MAP and summary["text"]["fold_accents"] is True
    assert kept_texts(tmp_path, "train") == ["Hello, world again.", "Meet me @ the cafe, number #5."]
    assert kept_texts(tmp_path, "dev") == ["Mail me @ home now?", "Is it about ~ 7, Zoe?"]
    lines = [r.getMessage() for r in caplog.records if "cannot encode" in r.getMessage()]
    assert lines == [
        "c: characters the tokenizer cannot encode (after normalisation and text.map): '@' x2, '#' x1, '~' x1"
    ]

    # a corpus file's own map (merged over the defaults, as Hydra composes it) and no folding: what is mapped goes,
    # the accented letters are reported
    cfg = make_cfg(tmp_path, splits, *tokenizer, "text.fold_accents=false", "filters.max_unk_share=0.2")
    with open_dict(cfg):
        OmegaConf.update(cfg, "text.map", {"@": " at ", "#": ""}, merge=True)
    summary = prepare_corpus(cfg)
    assert summary["text"]["map"] == {**DEFAULT_MAP, "@": " at ", "#": ""}  # merged over the defaults
    assert summary["text"]["unencodable_characters"] == {"é": 1, "~": 1, "ë": 1}
    assert kept_texts(tmp_path, "train") == ["Hello, world again.", "Meet me at the café, number 5."]

    # the default <unk> share threshold (2 %) sets aside the rows that still have one
    summary = prepare_corpus(make_cfg(tmp_path, splits, *tokenizer))
    assert summary["rows"]["kept"] == 1 and summary["text"]["unencodable_characters"] == {"@": 2, "#": 1, "~": 1}


def test_lower_strip_with_a_pnc_tokenizer_is_one_line_naming_text_policy(tmp_path, pnc_tokenizer):
    args = ["corpus=demo_general", f"tokenizer={pnc_tokenizer}", f"out_root={tmp_path / 'out'}", "progress=false"]
    done = run_cli("data_prep", args, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("data_prep: error: text.policy=lower_strip: "), done.stderr
    assert "capitals and punctuation (!,.?)" in lines[0] and "text.allow_strip_for_pnc_tokenizer=true" in lines[0]
    assert not (tmp_path / "out" / "demo_general").exists()  # refused before anything is written


def test_lower_strip_with_a_pnc_tokenizer_when_opted_in(tmp_path, pnc_tokenizer):
    splits = {"train": [manifest(tmp_path, "train", ["Hello; World (again).", "It's 3 o'clock, Zoë."])]}
    opted_in = [f"tokenizer={pnc_tokenizer}", "filters.feasibility=ctc", "text.allow_strip_for_pnc_tokenizer=true"]
    summary = prepare_corpus(make_cfg(tmp_path, splits, *opted_in))
    assert summary["text"]["policy"] == "lower_strip" and summary["text"]["allow_strip_for_pnc_tokenizer"] is True
    assert kept_texts(tmp_path, "train") == ["hello world again", "it's 3 o'clock zoe"]
    assert summary["text"]["unencodable_characters"] == {}


def test_lower_strip_with_a_lowercase_tokenizer_is_no_error(tmp_path):
    # the demo corpora as the demo prepares them: lower_strip, the 128-piece lower-case tokenizer of the demo model
    for corpus in ("demo_general", "demo_target"):
        cfg = compose_config(CONF / "data_prep", "prepare", [f"corpus={corpus}", f"tokenizer={BASE_MODEL}"])
        assert PREPARE.problems(cfg) == []
    splits = {"train": [manifest(tmp_path, "train", ["Hello; World (again).", "It's three o'clock, Zoë."])]}
    summary = prepare_corpus(make_cfg(tmp_path, splits, f"tokenizer={BASE_MODEL}"))
    assert kept_texts(tmp_path, "train") == ["hello world again", "it's three o'clock zoe"]
    assert summary["text"]["unencodable_characters"] == {}
