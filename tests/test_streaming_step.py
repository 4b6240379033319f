"""The engine's own chunk step (``recipes.streaming.attention.ChunkStep``): its encoder outputs are NeMo's
``cache_aware_stream_step``'s chunk after chunk, its windows hold what NeMo's caches would, and streaming with it
gives the tokens of the offline pass and of NeMo's own loop, on the tiny architecture and on the released 0.6B
architecture (2 of its 24 layers; the full model is checked by ``scripts/bench_streaming.py``, see
docs/benchmarks.md); in fp32 and in bf16; and whatever row count NeMo's CUDA-graph decoding returns."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from recipes.streaming.attention import ChunkStep, nemo_step
from recipes.streaming.engine import StreamingRecognizer, padded
from recipes.streaming.geometry import ChunkPlan
from recipes.streaming.modes import evaluation_mode, no_typechecks
from recipes.streaming.windows import Window
from tests.support import streaming as support
from tests.support.streaming import nemo_loop, random_audios

SECONDS = [7.3, 2.0, 4.1]  # the first longer than the 70-frame attention cache (5.6 s), so the windows roll over


@pytest.fixture(scope="module")
def standin_layers(tmp_path_factory):
    return support.standin_layers(tmp_path_factory)


pytestmark = pytest.mark.usefixtures("one_thread")


def step_outputs(model, audios, att_context_size, steps: int | None = None, number_format=nullcontext):
    """Encoder outputs of the first ``steps`` chunks of a batch (default: all of the longest stream's), from the
    engine's step and from NeMo's (same chunks: ``ChunkPlan``), as (engine, nemo) pairs of (encoded, lengths,
    cached-frame counts)."""
    feats, lengths = padded(StreamingRecognizer(model).features(audios))
    pairs = []
    with evaluation_mode(model, att_context_size), torch.inference_mode(), no_typechecks(), number_format():
        encoder = model.encoder
        plan = ChunkPlan.of(encoder)
        cache = encoder.get_initial_cache_state(batch_size=len(audios))
        chunk_step = ChunkStep(encoder)
        caches = chunk_step.initial_caches(len(audios))
        for step in range(steps or plan.steps(int(lengths.max()))):
            chunk, chunk_lengths, drop = plan.chunk_input(feats, lengths, step)
            with chunk_step:
                mine = (*chunk_step(caches, chunk, chunk_lengths, drop), caches.lengths)
            encoded, encoded_lengths, cache = nemo_step(encoder, chunk, chunk_lengths, cache, drop)
            pairs.append((mine, (encoded, encoded_lengths, cache[2])))
    return pairs


@pytest.mark.parametrize("att_context_size", [[70, 0], [70, 13], [68, 3]])
@pytest.mark.parametrize("name", ["random_model", "standin_layers"])
def test_chunk_step_gives_nemos_encoder_outputs_chunk_after_chunk(request, name, att_context_size):
    model = request.getfixturevalue(name)
    pairs = step_outputs(model, random_audios(SECONDS), att_context_size)
    for step, ((encoded, lengths, cached), (nemo_encoded, nemo_lengths, nemo_cached)) in enumerate(pairs):
        assert torch.equal(lengths, nemo_lengths) and torch.equal(cached, nemo_cached), f"step {step}"
        torch.testing.assert_close(encoded, nemo_encoded, rtol=1e-4, atol=1e-4, msg=f"step {step}")
    assert pairs[-1][0][2].tolist() == [att_context_size[0]] * len(SECONDS)  # the caches are full


def test_chunk_step_in_bf16_stays_close_to_nemos(standin_layers):
    """Under bf16 autocast (CPU here; the same code runs on CUDA) the engine's step and NeMo's round alike."""
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    pairs = step_outputs(standin_layers, random_audios(SECONDS), [70, 1], 6, number_format=bf16)
    for (encoded, _, _), (nemo_encoded, _, _) in pairs:
        assert encoded.dtype == nemo_encoded.dtype
        scale = nemo_encoded.float().abs().max()
        assert (encoded.float() - nemo_encoded.float()).abs().max() <= 0.05 * scale
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = StreamingRecognizer(standin_layers, 2).stream(random_audios(SECONDS), [70, 13])
    assert all(result.tokens)


@pytest.mark.parametrize("att_context_size", [[70, 13], [70, 0]])
def test_standin_streams_exactly_like_offline_and_nemos_loop(standin_layers, att_context_size):
    """80 and 1120 ms: batched streaming (streams leaving and joining) == offline == NeMo's own loop."""
    audios = random_audios([6.1, 0.5, 2.0, 3.3], seed=2)
    streamed = StreamingRecognizer(standin_layers, 2).stream(audios, att_context_size)
    offline = StreamingRecognizer(standin_layers, 2).offline(audios, att_context_size)
    assert streamed.tokens == offline.tokens
    assert streamed.tokens == nemo_loop(standin_layers, audios, att_context_size)
    assert sum(map(len, streamed.tokens)) > 100  # random weights emit tokens at most frames


def test_window_keeps_the_last_frames_through_rewinds_selections_and_joins():
    keep, rng = 5, torch.Generator().manual_seed(0)
    window, reference = Window(keep), torch.zeros(3, 2, keep, 4)
    for size in [3, 1, 1, 4, 2, 1, 6, 1, 1, 1, 9, 2]:  # rewinds, and a chunk longer than the buffer was made for
        new = torch.randn(3, 2, size, 4, generator=rng)
        reference = torch.cat([reference, new], dim=2)
        assert torch.equal(window.push(new), reference[:, :, -(keep + size) :])
        reference = reference[:, :, -keep:]
    rows = torch.tensor([True, False, True])
    selected = window.select(rows)
    assert torch.equal(selected.window(), reference[rows])
    joined = Window.joined([window, selected])
    assert torch.equal(joined.window(), torch.cat([reference, reference[rows]]))
    new = torch.randn(5, 2, 1, 4, generator=rng)
    assert torch.equal(joined.push(new), torch.cat([torch.cat([reference, reference[rows]]), new], dim=2))


def on_cpu_as_with_cuda_graphs(computer_class: type) -> type:
    """NeMo's label-looping computer running its CUDA-graph decoding as it is (``cuda_graphs_impl``: state
    preallocated for the largest batch seen, hypotheses and state returned padded to it) in NeMo's own
    ``no_graphs`` mode, which runs the same code without capturing graphs, so that it runs on the CPU (where
    NeMo's ``__call__`` sends CPU tensors to its plain loop)."""

    class GraphDecodingOnCpu(computer_class):
        def __call__(self, x, out_len, prev_batched_state=None, multi_biasing_ids=None):
            return self.cuda_graphs_impl(x, out_len, prev_batched_state, multi_biasing_ids)

    return GraphDecodingOnCpu


def test_streaming_with_decoding_padded_as_cuda_graphs_pad_it(random_model):
    """The live batch shrinks and grows (9 streams of different lengths, 3 at a time) while NeMo's graph decoding
    keeps returning rows for the largest batch: the engine keeps the live rows, and gives the offline tokens."""
    computer = random_model.decoding.decoding.decoding_computer
    plain = type(computer)
    audios = random_audios([3.1, 0.4, 1.7, 2.6, 0.9, 5.8, 1.2, 0.3, 2.2], seed=3)
    offline = StreamingRecognizer(random_model, 3).offline(audios, [70, 1])
    computer.force_cuda_graphs_mode("no_graphs")
    computer.__class__ = on_cpu_as_with_cuda_graphs(plain)
    try:
        streamed = StreamingRecognizer(random_model, 3).stream(audios, [70, 1])
        padded_rows = computer.state.batch_size
    finally:
        computer.__class__ = plain
        computer.force_cuda_graphs_mode(None)
    assert padded_rows == 3  # NeMo's preallocated rows: more than the batch had as it emptied
    assert streamed.tokens == offline.tokens


@pytest.mark.gpu
def test_standin_on_gpu_with_cuda_graph_decoding_streams_like_offline():
    """The released architecture (24 layers, random weights) on CUDA, NeMo's CUDA-graph decoding on: 24 streams
    of 0.3-12 s, 8 at a time (the live batch shrinks and is refilled many times), tokens equal to offline."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from scripts.bench_models import load_bench_model, use_cuda_graph_decoding

    model = load_bench_model("random:nemotron_streaming_0.6b", torch.device("cuda"))
    use_cuda_graph_decoding(model)
    audios = random_audios([0.3 + 0.5 * i for i in range(24)], seed=4)
    for att_context_size in ([70, 13], [70, 0]):
        streamed = StreamingRecognizer(model, 8).stream(audios, att_context_size)
        offline = StreamingRecognizer(model, 8).offline(audios, att_context_size)
        assert streamed.tokens == offline.tokens, att_context_size
