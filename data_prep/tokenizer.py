"""SentencePiece tokenizers in the layout NeMo's ``tokenizer: {dir, type: bpe}`` expects.

The model's own tokenizer is the default and the reference of the ``<unk>`` check (:func:`count_unk`).
``python -m data_prep.train_tokenizer`` trains a new one on prepared domain text (:func:`domain_texts`),
after :data:`REPLACEMENT_WARNING`.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm


def train_sentencepiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int, model_type: str = "bpe") -> Path:
    """Train a SentencePiece model on ``texts`` and write ``tokenizer.model``, ``tokenizer.vocab``
    and ``vocab.txt`` into ``out_dir``. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "text_corpus.txt"
    corpus.write_text("\n".join(t for t in texts if t.strip()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        # NeMo's RNNT models reserve the blank themselves; <unk> is the only special piece needed.
        bos_id=-1,
        eos_id=-1,
        unk_id=0,
        num_threads=2,
        minloglevel=2,
    )
    pieces = [line.split("\t")[0] for line in (out_dir / "tokenizer.vocab").read_text(encoding="utf-8").splitlines()]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n", encoding="utf-8")
    corpus.unlink()
    return out_dir


def load_sentencepiece(path: str | Path) -> spm.SentencePieceProcessor:
    """Load the SentencePiece model from a ``.model`` file, a tokenizer directory, or a ``.nemo`` archive
    (without restoring the whole ASR model)."""
    path = Path(path)
    if path.suffix == ".nemo":
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".model") and "tokenizer" in m.name]
            if not members:
                raise FileNotFoundError(f"{path}: no SentencePiece tokenizer inside this .nemo archive")
            with tempfile.TemporaryDirectory() as tmp:
                tar.extract(members[0], tmp)
                return spm.SentencePieceProcessor(model_file=str(Path(tmp) / members[0].name))
    if path.is_dir():
        path = path / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SentencePiece model not found (give a .model file, its directory or a .nemo)")
    return spm.SentencePieceProcessor(model_file=str(path))


def nemo_model_config(path: str | Path) -> dict:
    """The model config stored in a ``.nemo`` archive (``model_config.yaml``), without restoring the model."""
    import yaml

    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if Path(m.name).name == "model_config.yaml"), None)
        if member is None:
            raise FileNotFoundError(f"{path}: no model_config.yaml inside this .nemo archive")
        return yaml.safe_load(tar.extractfile(member))


def count_unk(sp: spm.SentencePieceProcessor, text: str) -> tuple[int, list[str]]:
    """Tokenize ``text`` as the model would; return the number of tokens and the surface text of every
    piece that came out as ``<unk>`` (text the model cannot learn to emit)."""
    try:
        pieces = sp.encode(text, return_type="proto").pieces
    except TypeError:  # sentencepiece < 0.2.1 has no return_type
        pieces = sp.encode(text, out_type="immutable_proto").pieces
    unk_id = sp.unk_id()
    return len(pieces), [p.surface.strip() for p in pieces if p.id == unk_id]


def vocabulary_characters(sp: spm.SentencePieceProcessor) -> frozenset[str]:
    """Every character some piece of ``sp`` spells (special pieces and the word-boundary mark aside): what a
    transcript may contain without coming out as ``<unk>``."""
    chars = set()
    for i in range(sp.get_piece_size()):
        if not (sp.is_unknown(i) or sp.is_control(i) or sp.is_unused(i) or sp.is_byte(i)):
            chars.update(sp.id_to_piece(i).replace("\u2581", ""))
    return frozenset(chars)


def unencodable_characters(unk_surfaces: Counter) -> Counter:
    """Per character, how often it came out as ``<unk>``, from the surfaces :func:`count_unk` returned (a run of
    characters the tokenizer cannot encode comes out as one ``<unk>``)."""
    chars = Counter()
    for surface, count in unk_surfaces.items():
        for ch in surface:
            if not ch.isspace():
                chars[ch] += count
    return chars


REPLACEMENT_WARNING = """\
WARNING: this trains a NEW tokenizer. Fine-tuning with it replaces the model's vocabulary: NeMo's
change_vocabulary() re-initialises the RNNT decoder (prediction network) and joint, so the model forgets
how to spell, starts near 100 % WER and needs far more data and steps than a fine-tune with the original
tokenizer; its outputs also stop matching the original model's (PnC, casing, numbers). Keep the model's
tokenizer unless summary.json shows a large <unk> share on your domain text (tokenizer_unk) that text
normalisation cannot fix."""


def domain_texts(cuts_paths: Iterable[str | Path]) -> Iterator[str]:
    """The normalised transcripts of prepared ``cuts.jsonl.gz`` manifests."""
    from lhotse import CutSet

    for path in cuts_paths:
        for cut in CutSet.from_jsonl_lazy(path):
            for sup in cut.supervisions:
                if sup.text:
                    yield sup.text
