"""A randomly initialised tiny streaming model and random audio: the engine tested with no trained model at hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes.config import CONF, compose_config


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """The tiny architecture with random weights (2 layers) and a throwaway tokenizer: no data or training
    needed, and a random joint emits several tokens per frame, which stresses the decoder state across chunks."""
    from data_prep.tokenizer import train_sentencepiece
    from recipes.finetune.model import build_model

    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa"
    tokenizer = train_sentencepiece([words, *words.split()], tmp_path_factory.mktemp("tokenizer"), vocab_size=40)
    cfg = compose_config(
        CONF,
        "finetune",
        [
            "model=tiny_streaming",
            f"model.architecture.tokenizer.dir={tokenizer}",
            "model.architecture.encoder.n_layers=2",
            "model.architecture.decoding.greedy.max_symbols=3",
        ],
    )
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


def random_audios(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]
