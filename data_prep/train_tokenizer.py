"""Train a SentencePiece tokenizer on prepared text:  python -m data_prep.train_tokenizer [key=value ...]

Only for models trained from scratch. Fine-tuning keeps the pretrained model's tokenizer: a new one
re-initialises the decoder and joint, and WER typically starts near 100 % (catastrophic forgetting).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from data_prep.checks import TOKENIZER
from data_prep.errors import DataPrepError
from data_prep.tokenizer import REPLACEMENT_WARNING, domain_texts, train_sentencepiece
from recipes.errors import exit_on_usage_error, run_hydra_main

log = logging.getLogger(__name__)


def train_domain_tokenizer(cfg: Mapping) -> Path:
    """Train on the transcripts of ``cfg.cuts`` (prepared, normalised) and write ``cfg.out_dir``."""
    TOKENIZER.check(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg)), DataPrepError)
    log.warning(REPLACEMENT_WARNING)
    out = train_sentencepiece(domain_texts(cfg["cuts"]), cfg["out_dir"], cfg["vocab_size"], cfg["model_type"])
    log.info("SentencePiece %s tokenizer, %d pieces -> %s", cfg["model_type"], cfg["vocab_size"], out)
    return out


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="tokenizer")
@exit_on_usage_error("data_prep.train_tokenizer")  # inside Hydra's job: no "Error executing job" traceback
def main(cfg: DictConfig) -> None:
    train_domain_tokenizer(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "data_prep.train_tokenizer")
