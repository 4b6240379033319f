"""A stand-in for the released nvidia/nemotron-speech-streaming-en-0.6b, built offline with nothing downloaded.

    python -m scripts.make_standin [--out DIR] [--seed 0]

Writes ``<DIR>/nemotron-speech-streaming-en-0.6b-standin.nemo`` (default DIR: ``$NEMOTRON_RECIPES_CACHE/standin``,
else ``~/.cache/nemotron-recipes/standin``) and prints its path and parameter count. It is what the release is as far
as public facts say (``conf/model/nemotron_streaming_0.6b.yaml``, every key's source there): an
``EncDecRNNTBPEModel`` of the release's shapes (618,084,865 parameters), its decoding and loss sections (greedy
batch, up to 10 symbols per frame, NeMo's numba RNNT loss with FastEmit 5e-3) and dataset sections without data,
with random weights from ``--seed`` and a 1024-piece SentencePiece BPE trained on punctuated, capitalised demo
sentences plus the release's other symbols. Its transcripts mean nothing; its shapes, files, memory and times are
the release's, so every stage of the recipe can be run on it before the real checkpoint is at hand.

Idempotent: a stand-in whose record (``standin.json``: seed, architecture, parameters) matches is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

from recipes.config import CONF, compose_config
from recipes.errors import exit_on_usage_error
from recipes.run_dir import atomic_path, write_atomic
from scripts.bench_models import demo_tokenizer, random_model

CONFIG = "nemotron_streaming_0.6b"
NAME = "nemotron-speech-streaming-en-0.6b-standin.nemo"
RECORD = "standin.json"
VOCAB_SIZE = 1024
# Symbols the release's vocabulary has beyond what the demo sentences use (letters, digits, , . ? ! '), so that the
# stand-in's pieces cover the same characters (and, as the release, none of ; ( ) [ ] # @ ~ or accented letters).
RELEASE_SYMBOLS = ['Dial 1-800: "Yes" & 50% off $20 * 2 / 4 + 1 = 26_a^2, not 3€ or £4.'] * 3


def default_dir() -> Path:
    root = os.environ.get("NEMOTRON_RECIPES_CACHE") or Path.home() / ".cache" / "nemotron-recipes"
    return Path(root).expanduser() / "standin"


def architecture() -> dict:
    """The released model's architecture as this repository's config describes it."""
    return OmegaConf.to_container(
        compose_config(CONF, "finetune", [f"model={CONFIG}"]).model.architecture, resolve=True
    )


def make_standin(out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """The stand-in ``.nemo`` in ``out_dir`` (built unless an identical one is there); returns its path."""
    from recipes.export.nemo import save_nemo

    out_dir = Path(out_dir) if out_dir else default_dir()
    nemo, record_path = out_dir / NAME, out_dir / RECORD
    wanted = {"seed": seed, "architecture": architecture()}
    if nemo.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if {key: record.get(key) for key in wanted} == wanted:
            print(f"{nemo}: up to date, {record['parameters']:,} parameters")
            return nemo
    tokenizer = demo_tokenizer(
        VOCAB_SIZE, style="pnc", out=out_dir / f"tokenizer_pnc_bpe{VOCAB_SIZE}", extra=RELEASE_SYMBOLS
    )
    model = random_model(CONFIG, tokenizer, seed)
    parameters = sum(p.numel() for p in model.parameters())
    with atomic_path(nemo) as partial:
        save_nemo(model, partial)
    write_atomic(record_path, lambda tmp: tmp.write_text(json.dumps({**wanted, "parameters": parameters}, indent=1)))
    print(f"{nemo}: {type(model).__name__}, {parameters:,} parameters, seed {seed}")
    return nemo


@exit_on_usage_error("scripts.make_standin")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"directory (default {default_dir()})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    make_standin(args.out, args.seed)


if __name__ == "__main__":
    main()
