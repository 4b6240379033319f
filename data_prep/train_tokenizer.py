"""Train a SentencePiece tokenizer on prepared text:  python -m data_prep.train_tokenizer [key=value ...]

Only for models trained from scratch. Fine-tuning keeps the pretrained model's tokenizer: a new one
re-initialises the decoder and joint, and WER typically starts near 100 % (catastrophic forgetting).
"""
from __future__ import annotations

import logging

import hydra
from lhotse import CutSet
from omegaconf import DictConfig

from data_prep.tokenizer import train_sentencepiece

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="tokenizer")
def main(cfg: DictConfig) -> None:
    log.warning("Training a new tokenizer. To fine-tune a pretrained model keep its own tokenizer: replacing "
                "it re-initialises the decoder and joint and throws away what they learned.")
    texts = [s.text for path in cfg.cuts for cut in CutSet.from_file(path) for s in cut.supervisions]
    out = train_sentencepiece(texts, cfg.out_dir, cfg.vocab_size, cfg.model_type)
    log.info("SentencePiece %s tokenizer, %d pieces, from %d texts -> %s", cfg.model_type, cfg.vocab_size,
             len(texts), out)


if __name__ == "__main__":
    main()
