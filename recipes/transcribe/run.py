"""``recipes.transcribe``: every line of ``audio=`` streamed through the engine at one lookahead, in groups of
streams that share the batches (continuous batching), each group's lines written as soon as it is done.

Memory stays bounded on hour-long files: each stream's features are computed a block at a time as the engine
reads them (``recipes.transcribe.features``), and the engine keeps only the caches of its running streams.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, ListConfig
from tqdm import tqdm

from recipes.errors import UsageError
from recipes.model_files import load_model
from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import lookahead_ms
from recipes.transcribe.channels import parse_channel
from recipes.transcribe.features import BlockFeatures, encoder_frame_seconds, placeholder
from recipes.transcribe.inputs import Item, items
from recipes.transcribe.output import captions_path, captions_text, cues, error_line, line_of, words, write_line

GROUP_PER_BATCH = 4  # streams per group = 4 x batch_size: batches stay full, and lines come out as groups end


def resolve_lookahead(value, model) -> list[int]:
    """``[left, right]`` for ``lookahead`` (ms, a pair, or None: the model's default)."""
    sizes = [list(map(int, s)) for s in model.encoder.att_context_size_all]
    if value is None:
        return sizes[0]
    if isinstance(value, (list, ListConfig)):
        found = [s for s in sizes if s == [int(v) for v in value]]
    else:
        found = [s for s in sizes if lookahead_ms(s) == int(value)]
    if found:
        return found[0]
    offered = ", ".join(f"{lookahead_ms(s)} ({s})" for s in sizes)
    raise UsageError(f"lookahead={value}: this model streams at {offered} ms: give one of those")


class Progress:
    """A bar in hours of audio, with the real-time factor so far."""

    def __init__(self, total_seconds: float, enabled: bool):
        self.started = time.perf_counter()
        self.done = 0.0
        self.bar = tqdm(
            total=total_seconds / 3600,
            unit="h",
            bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h audio [{elapsed}<{remaining}{postfix}]",
            disable=not enabled,
            desc="transcribe",
        )

    def advance(self, seconds: float) -> None:
        self.done += seconds
        self.bar.update(seconds / 3600)
        self.bar.set_postfix_str(f"RTF {self.rtf():.3f}", refresh=False)

    def rtf(self) -> float:
        return (time.perf_counter() - self.started) / max(self.done, 1e-9)


def stream_group(recognizer: StreamingRecognizer, group: Sequence[Item], la, progress: Progress) -> list[tuple]:
    """(item, output line, token ids) for each item of ``group``, in order."""
    live = [item for item in group if item.audio is not None]
    feats = [BlockFeatures(item.audio, recognizer, progress.advance) for item in live]
    result = recognizer.stream([placeholder(item.audio.num_samples) for item in live], la, feats) if live else None
    frame_s = encoder_frame_seconds(recognizer.model)
    done = {}
    for k, (item, feat) in enumerate(zip(live, feats)):
        if feat.error:  # decoding failed part way: no transcript from the silence it was replaced with
            item.error = feat.error
            continue
        ids, frames = result.tokens[k], result.token_frames[k]
        starts = [f * frame_s for f in frames] if len(frames) == len(ids) else []
        pieces = recognizer.model.tokenizer.ids_to_tokens(ids) if ids else []
        line = line_of(item, result.texts[k], pieces, starts, result.compute_seconds[k], lookahead_ms(la))
        done[id(item)] = (item, line, ids)
    return [done.get(id(item), (item, error_line(item), [])) for item in group]


def _on_device(model, device: str):
    if device == "auto":  # load_model put it on the GPU where there is one
        return model
    return model.to(torch.device(device))


def _write_captions(folder: Path, fmt: str, item: Item, line: dict, ids: list[int], model, taken: set) -> None:
    timed = words(line["tokens"], ids, line["token_start_s"], model.tokenizer.ids_to_text)
    folder.mkdir(parents=True, exist_ok=True)
    captions_path(folder, item, fmt, taken).write_text(captions_text(cues(timed, item.duration), fmt), "utf-8")


def transcribe(cfg: DictConfig, model=None) -> dict:
    """Write ``cfg.output`` (and captions); returns the run's summary (lines, errors, hours, RTF, memory)."""
    model = _on_device(model if model is not None else load_model(cfg.model, key="model"), cfg.device)
    la = resolve_lookahead(cfg.lookahead, model)
    lines = items(str(cfg.audio), parse_channel(cfg.channel, "channel"))
    recognizer = StreamingRecognizer(model, cfg.batch_size)
    output = Path(str(cfg.output))
    output.parent.mkdir(parents=True, exist_ok=True)
    captions_dir = None
    if cfg.captions:
        captions_dir = Path(str(cfg.captions_dir)) if cfg.captions_dir else output.with_name(output.stem + "_captions")
    progress = Progress(sum(item.duration for item in lines), cfg.progress)
    size, taken, errors = GROUP_PER_BATCH * cfg.batch_size, set(), 0
    with open(output, "w", encoding="utf-8") as out:
        for start in range(0, len(lines), size):
            for item, line, ids in stream_group(recognizer, lines[start : start + size], la, progress):
                write_line(out, line)
                errors += "error" in line
                if captions_dir is not None and "error" not in line:
                    _write_captions(captions_dir, cfg.captions, item, line, ids, model, taken)
            out.flush()
    progress.bar.close()
    return _summary(lines, errors, progress, output, la)


def _summary(lines: list[Item], errors: int, progress: Progress, output: Path, la) -> dict:
    elapsed = time.perf_counter() - progress.started
    audio_s = sum(item.duration for item in lines)
    summary = {
        "output": str(output),
        "lines": len(lines),
        "errors": errors,
        "files": len({item.audio_filepath for item in lines}),
        "audio_hours": round(audio_s / 3600, 4),
        "lookahead_ms": lookahead_ms(la),
        "elapsed_s": round(elapsed, 2),
        "rtf": round(elapsed / max(audio_s, 1e-9), 4),
        "files_per_s": round(len({item.audio_filepath for item in lines}) / max(elapsed, 1e-9), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(
        f"recipes.transcribe: {summary['lines']} lines ({errors} with an error) -> {output}: "
        f"{summary['audio_hours']:.3f} h of audio at {summary['lookahead_ms']} ms in {summary['elapsed_s']:.1f} s, "
        f"RTF {summary['rtf']:.4f}, {summary['files_per_s']:.2f} files/s, peak memory {summary['peak_rss_mib']} MiB",
        file=sys.stderr,
    )
    return summary
