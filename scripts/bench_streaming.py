"""Benchmark the streaming engine against NeMo's reference streaming, buffered streaming and one offline pass.

    python scripts/bench_streaming.py --model models/demo_base.nemo [--utterances 64] [--batch-size 32]
                                      [--lookaheads 70,13 70,1] [--repeats 1]

On one model and one manifest of varied-length utterances (1-20 s, made once under data/bench/streaming/ by
concatenating demo dev utterances, stored in manifest order), for each lookahead, measured in one run:

(a) this engine: ``StreamingRecognizer.stream`` (length-sorted batches that shrink as streams end, batched
    greedy state kept across chunks);
(b) NeMo's reference approach, as examples/asr/asr_cache_aware_streaming/speech_to_text_cache_aware_streaming_infer.py
    does it: fixed batches in manifest order, features computed per utterance into a
    ``CacheAwareStreamingAudioBuffer``, one ``conformer_stream_step`` per chunk;
(c) buffered streaming at the same latency: for every chunk, a sliding window of the last ``left`` encoder frames
    plus the new chunk is re-encoded from scratch (the model's own chunked-limited masks) and only the new
    chunk's frames are decoded, with the decoder state carried on (cheaper than NeMo's buffered RNNT, which
    re-decodes whole windows and merges them);
(d) one offline forward per batch with the same masks: the floor.

Every time is wall-clock from waveforms in memory to transcripts (features included), best of ``--repeats``.
Prints throughput (seconds of audio per second of compute), the ratios a/b, a/c and time a/d, whether (a) gives
exactly the transcripts of (b), and how many tokens (a), (b) and (c) differ from the offline pass (d) by.

(a) equals (d) token for token at every lookahead. (b) can differ from both at the ends of streams only: NeMo's
buffer streams one more (masked, all-zero) feature frame per utterance than the model's own feature length,
stops before the last < 8 frames of the longest stream of each batch, and at [70, 0] pads the second chunk's
pre-encode cache with zero features; with a trained model this rarely changes a token.
"""
from __future__ import annotations

import argparse
import platform
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from lhotse import CutSet

from recipes.inference import load_model
from recipes.streaming import (SAMPLE_RATE, StreamingRecognizer, _LabelLoopingDecoder, count_token_differences,
                               evaluation_mode, lookahead_ms, padded)

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "data/prepared/demo_target/dev/cuts.jsonl.gz", REPO / "data/prepared/demo_general/dev/cuts.jsonl.gz"]
MANIFEST = REPO / "data/bench/streaming/cuts.jsonl.gz"
GOALS = {"a/b": 2.0, "a/c": 3.0, "time a/d": 1.5}


def make_manifest(path: Path, sources: Sequence[Path], utterances: int, seed: int = 0,
                  shortest: float = 1.0, longest: float = 20.0, gap: float = 0.3) -> CutSet:
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


@dataclass
class Run:
    tokens: list[list[int]]
    texts: list[str]
    seconds: float


def engine(model, audios, att_context_size, batch_size) -> Run:
    start = time.perf_counter()
    result = StreamingRecognizer(model, batch_size).stream(audios, att_context_size)
    return Run(result.tokens, result.texts, time.perf_counter() - start)


def offline(model, audios, att_context_size, batch_size) -> Run:
    start = time.perf_counter()
    result = StreamingRecognizer(model, batch_size).offline(audios, att_context_size)
    return Run(result.tokens, result.texts, time.perf_counter() - start)


def nemo_reference(model, audios, att_context_size, batch_size) -> Run:
    """NeMo's cache-aware streaming script, reduced to its inference loop (audio from memory, not files)."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    tokens, texts = [], []
    start = time.perf_counter()
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
                    processed_signal=chunk, processed_signal_length=chunk_lens,
                    cache_last_channel=cache[0], cache_last_time=cache[1], cache_last_channel_len=cache[2],
                    keep_all_outputs=buffer.is_buffer_empty(), previous_hypotheses=hyps,
                    previous_pred_out=pred_out,
                    drop_extra_pre_encoded=0 if step == 0 else encoder.streaming_cfg.drop_extra_pre_encoded,
                    return_transcription=True)
            tokens += [[int(t) for t in h.y_sequence] for h in hyps]
            texts += [h.text for h in hyps]
            buffer.reset_buffer()
    return Run(tokens, texts, time.perf_counter() - start)


def buffered(model, audios, att_context_size, batch_size, left_frames: int | None = None) -> Run:
    """Overlapping-window streaming: every chunk re-encodes [left context | chunk] from the features."""
    recognizer = StreamingRecognizer(model, batch_size)
    chunk = att_context_size[1] + 1                       # encoder frames per chunk
    left = att_context_size[0] if left_frames is None else left_frames
    left = -(-left // chunk) * chunk                      # whole chunks, so the window keeps the chunk grid
    sub = model.encoder.subsampling_factor
    tokens: list[list[int]] = [[] for _ in audios]
    start = time.perf_counter()
    with evaluation_mode(model, att_context_size), torch.no_grad():
        for batch in recognizer._batches(audios):
            feats, lengths = padded(recognizer.features([audios[i] for i in batch]))
            frames = lengths.tolist()
            decoder = _LabelLoopingDecoder(model)
            active, step = len(batch), 0
            while True:
                chunk_start = step * chunk * sub                 # mel frames
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
    texts = recognizer.texts(tokens)
    return Run(tokens, texts, time.perf_counter() - start)


METHODS: dict[str, Callable] = {
    "(a) engine": engine,
    "(b) NeMo reference": nemo_reference,
    "(c) buffered": buffered,
    "(d) offline": offline,
}


def parse_lookahead(text: str) -> list[int]:
    left, right = text.split(",")
    return [int(left), int(right)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(REPO / "models/demo_base.nemo"))
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="the same for every method")
    parser.add_argument("--lookaheads", type=parse_lookahead, nargs="*", default=None,
                        help="left,right pairs (default: every lookahead of the model)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings per method")
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args()

    cuts = make_manifest(args.manifest, SOURCES, args.utterances)
    audios, _ = load_audio(cuts)
    durations = [len(a) / SAMPLE_RATE for a in audios]
    audio_seconds = sum(durations)
    model = load_model(args.model)
    lookaheads = args.lookaheads or [list(la) for la in model.encoder.att_context_size_all]
    print(f"# streaming benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {model.device}")
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    print(f"{len(audios)} utterances, {audio_seconds:.0f} s of audio ({min(durations):.1f}-{max(durations):.1f} s), "
          f"batch size {args.batch_size}\n")
    for method in METHODS.values():  # warm up every code path once
        method(model, audios[:2], lookaheads[0], args.batch_size)

    for la in lookaheads:
        runs: dict[str, Run] = {}
        for name, method in METHODS.items():
            best = None
            for _ in range(args.repeats):
                run = method(model, audios, la, args.batch_size)
                best = run if best is None or run.seconds < best.seconds else best
            runs[name] = best
        a, b, c, d = runs.values()
        print(f"## lookahead {la} ({lookahead_ms(la)} ms chunks)\n")
        print("| method | compute s | audio s / compute s |\n|---|---:|---:|")
        for name, run in runs.items():
            print(f"| {name} | {run.seconds:.2f} | {audio_seconds / run.seconds:.1f} |")
        ratios = {"a/b": b.seconds / a.seconds, "a/c": c.seconds / a.seconds, "time a/d": a.seconds / d.seconds}
        print()
        for key, value in ratios.items():
            goal = GOALS[key]
            met = value <= goal if key.startswith("time") else value >= goal
            print(f"- {key}: {value:.2f}x (goal {'<=' if key.startswith('time') else '>='} {goal}x: "
                  f"{'met' if met else 'MISSED'})")
        print(f"- (a) transcripts identical to (b): {a.texts == b.texts and a.tokens == b.tokens} "
              f"({count_token_differences(a.tokens, b.tokens)} differing tokens)")
        print(f"- tokens differing from the offline pass (d): (a) {count_token_differences(a.tokens, d.tokens)}, "
              f"(b) {count_token_differences(b.tokens, d.tokens)}, (c) {count_token_differences(c.tokens, d.tokens)} "
              f"(of {sum(map(len, d.tokens))} tokens)\n")


if __name__ == "__main__":
    main()
