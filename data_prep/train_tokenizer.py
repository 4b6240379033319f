"""Train a SentencePiece tokenizer on prepared text:  python -m data_prep.train_tokenizer [key=value ...]

Only for models trained from scratch. Fine-tuning keeps the pretrained model's tokenizer: a new one
re-initialises the decoder and joint, and WER typically starts near 100 % (catastrophic forgetting).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import hydra
from omegaconf import DictConfig

from data_prep.tokenizer import REPLACEMENT_WARNING, domain_texts, train_sentencepiece

log = logging.getLogger(__name__)


def train_domain_tokenizer(cfg: Mapping) -> Path:
    """Train on the transcripts of ``cfg.cuts`` (prepared, normalised) and write ``cfg.out_dir``."""
    log.warning(REPLACEMENT_WARNING)
    out = train_sentencepiece(domain_texts(cfg["cuts"]), cfg["out_dir"], cfg["vocab_size"], cfg["model_type"])
    log.info("SentencePiece %s tokenizer, %d pieces -> %s", cfg["model_type"], cfg["vocab_size"], out)
    return out


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="tokenizer")
def main(cfg: DictConfig) -> None:
    train_domain_tokenizer(cfg)


if __name__ == "__main__":
    main()
