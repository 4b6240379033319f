"""Randomly initialised streaming models, random audio, and NeMo's own streaming loop: the engine tested with no
trained model at hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recipes.config import CONF, compose_config

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november oscar papa"


def build_random_model(config: str, tokenizer_dir: Path, overrides: list[str], seed: int = 0):
    """``conf/model/<config>.yaml``'s architecture with ``overrides``, random weights from ``seed``, as the recipe
    builds a model from scratch."""
    from recipes.finetune.model import build_model

    cfg = compose_config(
        CONF,
        "finetune",
        [f"model={config}", "model.init_from=null", f"model.architecture.tokenizer.dir={tokenizer_dir}", *overrides],
    )
    torch.manual_seed(seed)
    return build_model(cfg.model).eval()


def words_tokenizer(tmp_path_factory) -> Path:
    """A throwaway 40-piece tokenizer: random weights need no real text."""
    from data_prep.tokenizer import train_sentencepiece

    return train_sentencepiece([WORDS, *WORDS.split()], tmp_path_factory.mktemp("tokenizer"), vocab_size=40)


@pytest.fixture(scope="module")
def one_thread():
    """A tiny model's chunk steps are too small to share between threads; on a busy machine a second thread
    only waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """The tiny architecture with random weights (2 layers): no data or training needed, and a random joint emits
    several tokens per frame, which stresses the decoder state across chunks."""
    return build_random_model(
        "tiny_streaming",
        words_tokenizer(tmp_path_factory),
        ["model.architecture.encoder.n_layers=2", "model.architecture.decoding.greedy.max_symbols=3"],
    )


def standin_layers(tmp_path_factory):
    """The released 0.6B architecture (``conf/model/nemotron_streaming_0.6b.yaml``: d_model 1024, 8 heads, 70
    frames of left context, its subsampling, convolution and decoder) with 2 of its 24 layers, a 40-piece
    vocabulary and at most 3 tokens per frame (random weights emit the most they may), random weights: every shape
    a chunk step meets in the release, at a twelfth of its encoder."""
    return build_random_model(
        "nemotron_streaming_0.6b",
        words_tokenizer(tmp_path_factory),
        ["model.architecture.encoder.n_layers=2", "model.architecture.decoding.greedy.max_symbols=3"],
    )


def random_audios(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def nemo_loop(model, audios: list[np.ndarray], att_context_size) -> list[list[int]]:
    """Tokens of NeMo's own cache-aware loop, one utterance at a time: ``conformer_stream_step`` with NeMo's caches,
    attention and decoding, fed the chunks the engine reads (``ChunkPlan``; NeMo's buffer differs from offline at
    the ends of streams, the plan does not)."""
    from recipes.streaming.engine import StreamingRecognizer
    from recipes.streaming.geometry import ChunkPlan
    from recipes.streaming.modes import evaluation_mode

    tokens = []
    with evaluation_mode(model, att_context_size), torch.inference_mode():
        plan = ChunkPlan.of(model.encoder)
        for feat in StreamingRecognizer(model).features(audios):
            feats, lengths = feat[None], torch.tensor([feat.size(1)])
            cache = model.encoder.get_initial_cache_state(batch_size=1)
            hyps, pred_out = None, None
            for step in range(plan.steps(feat.size(1))):
                chunk, chunk_lengths, drop = plan.chunk_input(feats, lengths, step)
                pred_out, _, *cache, hyps = model.conformer_stream_step(
                    processed_signal=chunk,
                    processed_signal_length=chunk_lengths,
                    cache_last_channel=cache[0],
                    cache_last_time=cache[1],
                    cache_last_channel_len=cache[2],
                    keep_all_outputs=False,
                    previous_hypotheses=hyps,
                    previous_pred_out=pred_out,
                    drop_extra_pre_encoded=drop,
                    return_transcription=True,
                )
            tokens.append([int(t) for t in hyps[0].y_sequence])
    return tokens
