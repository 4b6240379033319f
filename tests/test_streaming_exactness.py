"""The streaming engine gives exactly the tokens of the offline pass with the same masks, of NeMo's own
streaming loop, and of one stream at a time: on the trained demo model over demo dev utterances, and on a
randomly initialised model (which emits many tokens per frame) where no trained model is at hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes.config import REPO
from recipes.streaming.engine import StreamingRecognizer, count_token_differences
from scripts.bench_streaming import nemo_reference
from tests.support.models import BASE_MODEL
from tests.support.streaming import nemo_loop, random_audios

LOOKAHEADS = [[70, 13], [70, 6], [70, 1], [70, 0]]
DEV_SETS = [REPO / "data/prepared/demo_target/dev/cuts.jsonl.gz", REPO / "data/prepared/demo_general/dev/cuts.jsonl.gz"]


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_exact(model, audios: list[np.ndarray], att_context_size, batch_size: int, single: list[int]) -> int:
    """Streaming (batched) == offline, and == streaming one stream at a time for the utterances ``single``;
    returns the number of tokens."""
    batched = StreamingRecognizer(model, batch_size).stream(audios, att_context_size)
    offline = StreamingRecognizer(model, batch_size).offline(audios, att_context_size)
    alone = StreamingRecognizer(model, 1).stream([audios[i] for i in single], att_context_size)
    assert count_token_differences(batched.tokens, offline.tokens) == 0, f"streaming != offline at {att_context_size}"
    assert batched.texts == offline.texts
    assert [batched.tokens[i] for i in single] == alone.tokens, f"batched != one stream at {att_context_size}"
    return sum(map(len, batched.tokens))


@pytest.fixture(scope="module")
def demo_model():
    if not BASE_MODEL.is_file():
        pytest.skip(
            f"{BASE_MODEL.relative_to(REPO)} is absent: it is made by the demo's pre-training stage "
            "(scripts/run_demo.sh stage 3)"
        )
    from recipes.model_files import load_model

    return load_model(str(BASE_MODEL))


@pytest.fixture(scope="module")
def demo_dev_audios(request) -> list[np.ndarray]:
    """Eight dev utterances of each demo set plus four of them joined into 7-14 s streams, longer than the
    attention cache (70 frames = 5.6 s), so the caches roll over."""
    from lhotse import CutSet

    sets = DEV_SETS
    if not all(p.is_file() for p in sets):
        workdir = request.getfixturevalue("demo_workdir")
        sets = [workdir / p.relative_to(REPO) for p in DEV_SETS]
    audios = []
    for path in sets:
        cuts = CutSet.from_file(path).to_eager()
        audios += [c.load_audio()[0].astype(np.float32) for c in list(cuts)[:8]]
    silence = np.zeros(4000, dtype=np.float32)
    joined = [np.concatenate([audios[i], silence, audios[i + 1], silence, audios[i + 2]]) for i in (0, 3, 8, 11)]
    return audios + joined


def test_demo_model_streams_exactly_like_offline_and_one_stream_at_a_time(demo_model, demo_dev_audios):
    single = [0, 9, 15, 16, 19]  # short and long, both sets, two joined streams
    tokens = [assert_exact(demo_model, demo_dev_audios, la, batch_size=6, single=single) for la in LOOKAHEADS]
    assert min(tokens) > 0, "the trained demo model should transcribe something"


def test_demo_model_matches_nemo_reference_streaming(demo_model, demo_dev_audios):
    """NeMo's own streaming loop differs from offline only at stream ends: its buffer streams one more feature
    frame per utterance (the padding value 0.0, which in unnormalised log-mel is louder than any speech, so a
    trained model may emit a token there) and skips the last < 8 frames of each batch's longest stream. So its
    transcripts equal ours except, for a few streams, in their last token."""
    ours = StreamingRecognizer(demo_model, 6).stream(demo_dev_audios, [70, 1])
    theirs = nemo_reference(demo_model, demo_dev_audios, [70, 1], batch_size=6)
    differing = [i for i, (a, b) in enumerate(zip(ours.tokens, theirs.tokens)) if a != b]
    for i in differing:
        shorter, longer = sorted((ours.tokens[i], theirs.tokens[i]), key=len)
        assert longer[: len(shorter)] == shorter and len(longer) - len(shorter) == 1, (
            f"stream {i} differs before its end"
        )
    assert len(differing) <= len(demo_dev_audios) // 4
    assert len(ours.tokens) == len(theirs.tokens) == len(demo_dev_audios)


@pytest.mark.parametrize("att_context_size", LOOKAHEADS)
def test_demo_model_gives_the_tokens_of_nemos_own_loop(demo_model, demo_dev_audios, att_context_size):
    """NeMo's loop (its caches, attention and decoding, ``conformer_stream_step``) fed the engine's chunks, one
    utterance at a time, gives the engine's tokens at every lookahead."""
    ours = StreamingRecognizer(demo_model, 6).stream(demo_dev_audios, att_context_size)
    assert ours.tokens == nemo_loop(demo_model, demo_dev_audios, att_context_size)


def test_random_model_streams_exactly_like_offline_and_one_stream_at_a_time(random_model):
    audios = random_audios([0.3, 1.05, 2.2, 6.1, 3.3, 0.9])
    for la in LOOKAHEADS:
        assert assert_exact(random_model, audios, la, batch_size=3, single=[1, 3, 5]) > 0


def test_streaming_reports_latencies_per_utterance(random_model):
    audios = random_audios([1.0, 4.0, 2.5], seed=1)
    result = StreamingRecognizer(random_model, 2).stream(audios, [70, 1])
    assert len(result.first_token_seconds) == len(result.final_seconds) == 3
    for audio, first, final in zip(audios, result.first_token_seconds, result.final_seconds):
        assert first is not None and 0.0 < first <= len(audio) / 16000 + 1.0
        assert 0.0 < final < 5.0
    partials = list(StreamingRecognizer(random_model).timed_partials(audios[1], [70, 1]))
    assert [round(s, 2) for s, _ in partials[:3]] == [0.09, 0.25, 0.41]  # first chunk 9 mel frames, then 16
    assert partials[-1][0] == pytest.approx(4.0, abs=0.02)
    assert partials[-1][1] == result.texts[1]


def test_few_row_kernels_compute_the_modules_products_and_leave_them_as_they_were(random_model):
    """The CPU kernels the engine streams with on large weights (``FewRowKernels``): the encoder's own products,
    for few rows and for many, and NeMo's modules untouched after the context."""
    from recipes.streaming.kernels import FewRowKernels

    encoder = random_model.encoder
    assert not FewRowKernels(encoder).linears, "the tiny model's weights stay in cache: NeMo's kernels"
    kernels = FewRowKernels(encoder, min_weight_bytes=0)  # every product, to test the kernels' arithmetic
    assert kernels.linears and len(kernels.pointwise) == 2 * len(encoder.layers)  # two per conformer convolution
    layer = encoder.layers[0]
    linear, conv = layer.feed_forward1.linear1, layer.conv.pointwise_conv1
    inputs = {rows: torch.randn(rows, 1, linear.in_features) for rows in (1, 8, FewRowKernels.MAX_ROWS + 1)}
    with torch.no_grad():
        expected = {rows: (linear(x), conv(x.transpose(1, 2))) for rows, x in inputs.items()}
        with kernels:
            assert "forward" in linear.__dict__ and "forward" in conv.__dict__  # the engine's kernels, not the class's
            got = {rows: (linear(x), conv(x.transpose(1, 2))) for rows, x in inputs.items()}
    for rows in inputs:
        for mine, theirs in zip(got[rows], expected[rows]):
            assert mine.shape == theirs.shape
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in kernels.linears + kernels.pointwise)
