"""Benchmark the streaming engine against NeMo's streaming (its reference loop and its serving pipeline), buffered
streaming and one offline pass.

    python -m scripts.bench_streaming --model models/demo_base.nemo [--utterances 64] [--batch-size 32]
        [--lookaheads 70,13 70,1] [--repeats 1] [--methods a b c d e] [--flops-seconds 4]
        [--device auto] [--dtype fp32|bf16]

``--model random:nemotron_streaming_0.6b`` runs the real 0.6B architecture with random weights
(``scripts/bench_models.py``). On one model and one manifest of varied-length utterances (1-20 s, made once under
data/bench/streaming/ by concatenating demo dev utterances, stored in manifest order), for each lookahead,
measured in one run:

(a) this engine: ``StreamingRecognizer.stream`` (length-sorted batches that shrink as streams end, batched
    greedy state kept across chunks);
(b) NeMo's reference approach, as examples/asr/asr_cache_aware_streaming/speech_to_text_cache_aware_streaming_infer.py
    does it: fixed batches in manifest order, features computed per utterance into a
    ``CacheAwareStreamingAudioBuffer``, one ``conformer_stream_step`` per chunk;
(c) buffered streaming at the same latency: for every chunk, a sliding window of the last ``left`` encoder frames
    plus the new chunk is re-encoded from scratch (the model's own chunked-limited masks) and only the new
    chunk's frames are decoded, with the decoder state carried on (cheaper than NeMo's buffered RNNT, which
    re-decodes whole windows and merges them);
(d) one offline forward per batch with the same masks: the floor;
(e) NeMo 3.0's serving pipeline, ``nemo.collections.asr.inference``'s ``CacheAwareRNNTPipeline`` (what
    ``CacheAwarePipelineBuilder`` builds): audio files read in chunks by its ``ContinuousBatchedRequestStreamer``
    (continuous batching, ``batch_size`` streams), features of each new chunk only (``use_feat_cache``), caches in
    its slot-based context manager, greedy decoding through per-stream ``Hypothesis`` objects, no ITN,
    translation or end-of-utterance cuts. Built once per lookahead on the same model in memory (untimed, as a
    server builds it once); timed from file paths to transcripts (reading the short WAVs is included).

Every other time is wall-clock from waveforms in memory to transcripts (features included), best of ``--repeats``,
with the GPU synchronised at both ends. Prints throughput (seconds of audio per second of compute), the ratios
a/b, a/c, a/e and time a/d, whether (a) gives exactly the transcripts of (b) and of (e), how many tokens (a), (b)
and (c) differ from the offline pass (d) by, and with ``--flops-seconds`` the FLOPs per chunk step of each method
(PyTorch's counter, one stream of that many seconds).

(a) equals (d) token for token at every lookahead. (b) can differ from both at the ends of streams only: NeMo's
buffer streams one more (masked, all-zero) feature frame per utterance than the model's own feature length,
stops before the last < 8 frames of the longest stream of each batch, and at [70, 0] pads the second chunk's
pre-encode cache with zero features; with a trained model this rarely changes a token. (e) computes features
chunk by chunk from the audio (a live server's only option), so its features differ from the whole-utterance
features of (a)-(d) near every chunk edge; see docs/benchmarks.md for what that does to transcripts.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jiwer
import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet

from recipes.errors import exit_on_usage_error
from recipes.streaming.decoders import LabelLoopingDecoder
from recipes.streaming.engine import StreamingRecognizer, count_token_differences, padded
from recipes.streaming.geometry import SAMPLE_RATE, ChunkPlan, lookahead_ms
from recipes.streaming.modes import evaluation_mode
from scripts.bench_models import (
    RANDOM,
    REPO,
    count_flops,
    describe_machine,
    load_bench_model,
    number_format,
    parse_lookahead,
    pick_device,
    timed,
    use_cuda_graph_decoding,
)
from scripts.token_rate import SECONDS, BlankCalibration, first_seconds

SOURCES = [REPO / "data/prepared/demo_target/dev/cuts.jsonl.gz", REPO / "data/prepared/demo_general/dev/cuts.jsonl.gz"]
MANIFEST = REPO / "data/bench/streaming/cuts.jsonl.gz"
GOALS = {"a/b": 2.0, "a/c": 3.0, "a/e": 2.0, "time a/d": 1.5}


def make_manifest(
    path: Path,
    sources: Sequence[Path],
    utterances: int,
    seed: int = 0,
    shortest: float = 1.0,
    longest: float = 20.0,
    gap: float = 0.3,
) -> CutSet:
    """Cuts of ``shortest``..``longest`` seconds (uniform targets), each demo utterances joined by ``gap`` s of
    silence, in random (manifest) order; written once and reused."""
    if path.is_file():
        cuts = CutSet.from_file(path).to_eager()
        if len(cuts) == utterances:
            return cuts
    rng = random.Random(seed)
    pool = [c for source in sources for c in CutSet.from_file(source)]
    made = []
    for i in range(utterances):
        target = rng.uniform(shortest, longest)
        pieces = [min(rng.sample(pool, 8), key=lambda c: abs(c.duration - target))]
        total = pieces[0].duration
        for _ in range(200):
            if total + gap + 1.0 > target:
                break
            candidate = rng.choice(pool)
            if total + gap + candidate.duration <= target:
                pieces.append(candidate)
                total += gap + candidate.duration
        cut = pieces[0]
        for piece in pieces[1:]:
            cut = cut.mix(piece, offset_other_by=cut.duration + gap, allow_padding=True)
        made.append(cut.with_id(f"bench_{i:04d}"))
    cuts = CutSet.from_cuts(made)
    path.parent.mkdir(parents=True, exist_ok=True)
    cuts.to_file(path)
    return cuts


def load_audio(cuts: CutSet) -> tuple[list[np.ndarray], list[str]]:
    audios = [c.resample(SAMPLE_RATE).load_audio()[0].astype(np.float32) for c in cuts]
    texts = [" ".join(s.text for s in c.supervisions) for c in cuts]
    return audios, texts


class Output(NamedTuple):
    tokens: list[list[int]] | None  # None where a method gives text only
    texts: list[str]


@dataclass
class Run:
    tokens: list[list[int]] | None
    texts: list[str]
    seconds: float


def engine(model, audios, att_context_size, batch_size) -> Output:
    result = StreamingRecognizer(model, batch_size).stream(audios, att_context_size)
    return Output(result.tokens, result.texts)


def offline(model, audios, att_context_size, batch_size) -> Output:
    result = StreamingRecognizer(model, batch_size).offline(audios, att_context_size)
    return Output(result.tokens, result.texts)


class NemoPipeline:
    """(e): NeMo's ``CacheAwareRNNTPipeline`` on ``model`` in memory, configured as ``CacheAwarePipelineBuilder``
    would from the keys it reads, with the model's own decoding config (the same greedy search as the others)."""

    def __init__(self, model, att_context_size, batch_size):
        from nemo.collections.asr.inference.factory.cache_aware_pipeline_builder import CacheAwarePipelineBuilder
        from nemo.collections.asr.inference.model_wrappers.cache_aware_rnnt_inference_wrapper import (
            CacheAwareRNNTInferenceWrapper,
        )
        from nemo.collections.asr.inference.pipelines.cache_aware_rnnt_pipeline import CacheAwareRNNTPipeline
        from omegaconf import OmegaConf

        class InMemory(CacheAwareRNNTInferenceWrapper):  # NeMo's wrapper loads from a path or the hub only
            @staticmethod
            def load_model(model_name, map_location):
                return model

        device = next(model.parameters()).device
        cfg = OmegaConf.create(
            {
                "asr_decoding_type": "rnnt",
                "pipeline_type": "cache_aware",
                "log_level": 30,
                "matmul_precision": "highest",
                "asr": {
                    "model_name": "in-memory",
                    "device": device.type,
                    "device_id": device.index or 0,
                    "compute_dtype": "float32",
                    "use_amp": False,  # bf16 comes from the caller's autocast
                    "decoding": OmegaConf.to_container(model.cfg.decoding),
                },
                "streaming": {
                    "att_context_size": list(att_context_size),
                    "sample_rate": SAMPLE_RATE,
                    "use_cache": True,
                    "use_feat_cache": True,
                    "batch_size": batch_size,
                    "num_slots": batch_size,
                    "word_boundary_tolerance": 4,
                    "request_type": "frame",
                },
                "endpointing": {"stop_history_eou": -1, "residue_tokens_at_end": 0},  # no end-of-utterance cuts
                "asr_output_granularity": "segment",
                "return_tail_result": False,
                "enable_itn": False,
                "enable_nmt": False,
                "itn": {"batch_size": 1, "n_jobs": 1, "left_padding_size": 0},
                "confidence": {"exclude_blank": True, "aggregation": "mean", "method_cfg": {"name": "max_prob"}},
                "cache_dir": None,
            }
        )
        wrapper = InMemory(
            model_name="in-memory",
            decoding_cfg=CacheAwarePipelineBuilder.get_rnnt_decoding_cfg(cfg),
            device=device.type,
            device_id=device.index or 0,
            compute_dtype="float32",
            use_amp=False,
        )
        self.pipeline = CacheAwareRNNTPipeline(cfg, wrapper)

    def __call__(self, paths: list[str]) -> list[str]:
        output = self.pipeline.run(paths)
        return [output[i]["text"] for i in range(len(paths))]


@contextmanager
def own_decoding(model):
    """NeMo's pipeline re-creates the model's decoding strategy; give the other methods theirs back."""
    saved = copy.deepcopy(model.cfg.decoding)
    try:
        yield
    finally:
        extra = {"decoder_type": "rnnt"} if hasattr(model, "cur_decoder") else {}
        model.change_decoding_strategy(saved, verbose=False, **extra)


def prepare(name: str, model, audios, att_context_size, batch_size, workdir: Path) -> Callable[[], Output]:
    """What a method does once, untimed (a server's start-up), and the timed work as a call."""
    if name == "e":
        paths = []
        for i, audio in enumerate(audios):
            paths.append(str(workdir / f"{i:04d}.wav"))
            sf.write(paths[-1], audio, SAMPLE_RATE)
        with evaluation_mode(model, att_context_size), own_decoding(model):
            pipeline = NemoPipeline(model, att_context_size, batch_size)

        def run_pipeline() -> Output:  # noqa: E306
            with evaluation_mode(model, att_context_size), torch.inference_mode():
                return Output(None, pipeline(paths))

        return run_pipeline
    return lambda: RUNNERS[name](model, audios, att_context_size, batch_size)


def nemo_reference(model, audios, att_context_size, batch_size) -> Output:
    """NeMo's cache-aware streaming script, reduced to its inference loop (audio from memory, not files)."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    tokens, texts = [], []
    with evaluation_mode(model, att_context_size), torch.inference_mode():
        encoder = model.encoder
        buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
        for index, audio in enumerate(audios):
            buffer.append_audio(audio, stream_id=-1)
            if (index + 1) % batch_size and index != len(audios) - 1:
                continue
            cache = encoder.get_initial_cache_state(batch_size=len(buffer.streams_length))
            hyps, pred_out = None, None
            for step, (chunk, chunk_lens) in enumerate(buffer):
                pred_out, _, *cache, hyps = model.conformer_stream_step(
                    processed_signal=chunk,
                    processed_signal_length=chunk_lens,
                    cache_last_channel=cache[0],
                    cache_last_time=cache[1],
                    cache_last_channel_len=cache[2],
                    keep_all_outputs=buffer.is_buffer_empty(),
                    previous_hypotheses=hyps,
                    previous_pred_out=pred_out,
                    drop_extra_pre_encoded=0 if step == 0 else encoder.streaming_cfg.drop_extra_pre_encoded,
                    return_transcription=True,
                )
            tokens += [[int(t) for t in h.y_sequence] for h in hyps]
            texts += [h.text for h in hyps]
            buffer.reset_buffer()
    return Output(tokens, texts)


def buffered(model, audios, att_context_size, batch_size, left_frames: int | None = None) -> Output:
    """Overlapping-window streaming: every chunk re-encodes [left context | chunk] from the features."""
    recognizer = StreamingRecognizer(model, batch_size)
    chunk = att_context_size[1] + 1  # encoder frames per chunk
    left = att_context_size[0] if left_frames is None else left_frames
    left = -(-left // chunk) * chunk  # whole chunks, so the window keeps the chunk grid
    sub = model.encoder.subsampling_factor
    tokens: list[list[int]] = [[] for _ in audios]
    with evaluation_mode(model, att_context_size), torch.no_grad():
        for batch in recognizer._batches(audios):
            feats, lengths = padded(recognizer.features([audios[i] for i in batch]))
            frames = lengths.tolist()
            decoder = LabelLoopingDecoder(model)
            active, step = len(batch), 0
            while True:
                chunk_start = step * chunk * sub  # mel frames
                running = sum(1 for f in frames[:active] if f > chunk_start)
                if running == 0:
                    break
                if running < active:
                    active = running
                    decoder.keep(active)
                end = chunk_start + chunk * sub
                window_start = max(0, end - (left + chunk) * sub)
                window = feats[:active, :, window_start:end]
                window_lens = torch.clamp(lengths[:active] - window_start, min=0, max=window.size(-1))
                encoded, encoded_lens = model.encoder(audio_signal=window, length=window_lens)
                skip = (chunk_start - window_start) // sub
                new = encoded[:, :, skip : skip + chunk]
                new_lens = torch.clamp(encoded_lens - skip, min=0, max=chunk)
                for j, new_tokens in enumerate(decoder(new, new_lens)):
                    tokens[batch[j]].extend(new_tokens)
                step += 1
    return Output(tokens, recognizer.texts(tokens))


METHODS = {
    "a": "(a) engine",
    "b": "(b) NeMo reference",
    "c": "(c) buffered",
    "d": "(d) offline",
    "e": "(e) NeMo pipeline",
}
RUNNERS: dict[str, Callable[..., Output]] = {"a": engine, "b": nemo_reference, "c": buffered, "d": offline}


def measure(name, model, audios, la, batch_size, device, dtype, repeats: int) -> Run:
    """Best of ``repeats`` timed runs of method ``name``."""
    best = None
    with tempfile.TemporaryDirectory() as tmp, number_format(device, dtype):
        run = prepare(name, model, audios, la, batch_size, Path(tmp))
        for _ in range(repeats):
            seconds: list[float] = []
            with timed(device, seconds):
                tokens, texts = run()
            if best is None or seconds[0] < best.seconds:
                best = Run(tokens, texts, seconds[0])
    return best


def flops_per_chunk_step(name, model, audio: np.ndarray, la, device, dtype) -> float:
    """FLOPs of method ``name`` on one stream, per chunk step the engine takes on it (for (d): per chunk's worth
    of audio)."""
    with tempfile.TemporaryDirectory() as tmp, number_format(device, dtype):
        run = prepare(name, model, [audio], la, 1, Path(tmp))
        total = count_flops(run)
    with evaluation_mode(model, la):
        steps = ChunkPlan.of(model.encoder).steps(StreamingRecognizer(model).features([audio])[0].size(1))
    return total / steps


def word_differences(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """Words by which ``b`` differs from ``a`` (substitutions + deletions + insertions), and of how many."""
    pairs = [(x, y) for x, y in zip(a, b) if x.strip() or y.strip()]
    if not pairs:
        return 0, 0
    out = jiwer.process_words([x or "<empty>" for x, _ in pairs], [y or "<empty>" for _, y in pairs])
    return out.substitutions + out.deletions + out.insertions, sum(len(x.split()) for x, _ in pairs)


@exit_on_usage_error("scripts.bench_streaming")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/demo_base.nemo"))
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="the same for every method")
    parser.add_argument(
        "--lookaheads",
        type=parse_lookahead,
        nargs="*",
        default=None,
        help="left,right pairs (default: every lookahead of the model)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings per method")
    parser.add_argument(
        "--methods",
        nargs="*",
        default=list(METHODS),
        choices=list(METHODS),
        help="which of (a)-(e) to run; (a) always runs",
    )
    parser.add_argument(
        "--flops-seconds",
        type=float,
        default=0.0,
        help="also count FLOPs per chunk step on one stream of this many seconds (0: no)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args()

    device = pick_device(args.device)
    names = ["a"] + [m for m in args.methods if m != "a"]
    cuts = make_manifest(args.manifest, SOURCES, args.utterances)
    audios, refs = load_audio(cuts)
    durations = [len(a) / SAMPLE_RATE for a in audios]
    audio_seconds = sum(durations)
    model = load_bench_model(args.model, device)
    use_cuda_graph_decoding(model)
    lookaheads = args.lookaheads or [list(la) for la in model.encoder.att_context_size_all]
    print(
        f"# streaming benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine(device)}, "
        f"device {device}, {args.dtype}"
    )
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    print(
        f"{len(audios)} utterances, {audio_seconds:.0f} s of audio ({min(durations):.1f}-{max(durations):.1f} s), "
        f"batch size {args.batch_size}\n"
    )
    for name in names:  # warm up every code path once, on the first 2 s of two utterances
        measure(
            name,
            model,
            [a[: 2 * SAMPLE_RATE] for a in audios[:2]],
            lookaheads[0],
            args.batch_size,
            device,
            args.dtype,
            1,
        )

    calibration = BlankCalibration(model, args.batch_size) if args.model.startswith(RANDOM) else None
    for la in lookaheads:
        if calibration is not None:  # random weights: a trained model's token rate, so decoding costs what it would
            print(
                f"random weights at {la}: {calibration.calibrate(*first_seconds(audios, refs, SECONDS), la).describe()}"
            )
        runs = {
            name: measure(name, model, audios, la, args.batch_size, device, args.dtype, args.repeats) for name in names
        }
        a = runs["a"]
        print(f"## lookahead {la} ({lookahead_ms(la)} ms chunks)\n")
        print("| method | compute s | audio s / compute s | WER vs reference text |\n|---|---:|---:|---:|")
        for name, run in runs.items():
            print(
                f"| {METHODS[name]} | {run.seconds:.2f} | {audio_seconds / run.seconds:.1f} | "
                f"{100 * jiwer.wer(refs, [t or '<empty>' for t in run.texts]):.1f} % |"
            )
        print()
        for key, other in (("a/b", "b"), ("a/c", "c"), ("a/e", "e"), ("time a/d", "d")):
            if other in runs:
                value = a.seconds / runs[other].seconds if key.startswith("time") else runs[other].seconds / a.seconds
                goal = GOALS[key]
                met = value <= goal if key.startswith("time") else value >= goal
                print(
                    f"- {key}: {value:.2f}x (goal {'<=' if key.startswith('time') else '>='} {goal}x: "
                    f"{'met' if met else 'MISSED'})"
                )
        if "b" in runs:
            b = runs["b"]
            print(
                f"- (a) transcripts identical to (b): {a.texts == b.texts and a.tokens == b.tokens} "
                f"({count_token_differences(a.tokens, b.tokens)} differing tokens)"
            )
        if "e" in runs:
            e = runs["e"]
            same = sum(x.strip() == y.strip() for x, y in zip(a.texts, e.texts))
            words, of = word_differences(a.texts, e.texts)
            print(
                f"- (a) transcripts identical to (e): {same == len(audios)} ({same} of {len(audios)} identical; "
                f"{words} word edits from (a)'s {of} words to (e)'s)"
            )
        emitted = sum(map(len, a.tokens))
        print(f"- (a) emitted {emitted} tokens, {emitted / audio_seconds:.1f} per second of audio")
        if "d" in runs:
            d = runs["d"]
            diffs = ", ".join(f"({n}) {count_token_differences(runs[n].tokens, d.tokens)}" for n in names if n in "abc")
            print(f"- tokens differing from the offline pass (d): {diffs} (of {sum(map(len, d.tokens))} tokens)")
        if args.flops_seconds:
            audio = next(x for x in audios if len(x) >= args.flops_seconds * SAMPLE_RATE)[
                : int(args.flops_seconds * SAMPLE_RATE)
            ]
            print(
                f"- GFLOPs per chunk step, one stream of {args.flops_seconds:.0f} s: "
                + ", ".join(
                    f"({n}) {flops_per_chunk_step(n, model, audio, la, device, args.dtype) / 1e9:.2f}" for n in names
                )
            )
        print()


if __name__ == "__main__":
    main()
