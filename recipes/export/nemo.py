"""A checkpoint as a self-contained, checked ``.nemo`` (weights, config, tokenizer).

The ``.nemo`` carries the default lookahead and decoding config chosen at export: NeMo builds a restored encoder with
the first entry of ``encoder.att_context_size`` as its default, so the chosen lookahead is moved to the front (its
training weight with it), and the decoding config is the one ``change_decoding_strategy`` leaves in the model config.
It is written under a temporary name, restored with ``ASRModel.restore_from``, streamed on a few utterances at every
lookahead, and renamed into place only if its tokens equal the checkpoint's.

Every ``.nemo`` the repository writes goes through :func:`save_nemo`: it carries ``train_ds``, ``validation_ds`` and
``test_ds`` sections as released checkpoints do, without paths of the run that trained it, since NeMo's own inference
(``model.transcribe``, ``transcribe_speech.py``) reads ``validation_ds`` and fails on a model without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from nemo.collections.asr.models import ASRModel
from omegaconf import DictConfig, OmegaConf, open_dict

from recipes.errors import UsageError
from recipes.finetune.model import release_freed_memory
from recipes.run_dir import atomic_path
from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import lookahead_ms

log = logging.getLogger(__name__)


def inference_datasets(sample_rate: int) -> dict[str, dict]:
    """Dataset sections with no data in them, as NeMo's streaming configs define them: enough for NeMo's inference,
    and a place for a user's own manifests."""
    common = {
        "manifest_filepath": None,
        "sample_rate": sample_rate,
        "batch_size": 16,
        "use_start_end_token": False,
        "num_workers": 0,
        "pin_memory": False,
    }
    return {
        "train_ds": {**common, "shuffle": True},
        "validation_ds": {**common, "shuffle": False},
        "test_ds": {**common, "shuffle": False},
    }


def save_nemo(model, path: str | Path) -> Path:
    """``model.save_to(path)`` with :func:`inference_datasets` in its config (replacing any the model has)."""
    with open_dict(model.cfg):
        for key, section in inference_datasets(int(model.cfg.preprocessor.sample_rate)).items():
            model.cfg[key] = section
    model.save_to(str(path))
    return Path(path)


def set_default_lookahead(model, att_context_size: Sequence[int]) -> None:
    """Make ``att_context_size`` the model's default now and in the config it is saved with."""
    lookaheads = [list(la) for la in model.encoder.att_context_size_all]
    chosen = list(att_context_size)
    if chosen not in lookaheads:
        raise UsageError(f"nemo.default_lookahead={chosen}: the model streams with {lookaheads} only")
    order = [lookaheads.index(chosen)] + [i for i, la in enumerate(lookaheads) if la != chosen]
    probs = model.cfg.encoder.get("att_context_probs")
    with open_dict(model.cfg):
        model.cfg.encoder.att_context_size = [lookaheads[i] for i in order]
        if probs is not None:
            model.cfg.encoder.att_context_probs = [float(probs[i]) for i in order]
    model.encoder.set_default_att_context_size(chosen)


def set_decoding(model, overrides: DictConfig | dict) -> None:
    """Merge ``overrides`` into the model's (RNNT) decoding config, e.g. ``{greedy: {max_symbols: 1}}``."""
    decoding = OmegaConf.merge(model.cfg.decoding, OmegaConf.create(overrides))
    if hasattr(model, "ctc_decoder"):  # hybrid RNNT + CTC: streaming uses the RNNT branch
        model.change_decoding_strategy(decoding, decoder_type="rnnt", verbose=False)
    else:
        model.change_decoding_strategy(decoding, verbose=False)


def streaming_tokens(model, audios: Sequence[np.ndarray]) -> dict[str, list[list[int]]]:
    """Streaming tokens at every lookahead of the model, keyed ``<ms>ms``."""
    recognizer = StreamingRecognizer(model, batch_size=len(audios))
    features = recognizer.features(audios)
    return {
        f"{lookahead_ms(la)}ms": recognizer.stream(audios, la, features).tokens
        for la in model.encoder.att_context_size_all
    }


def apply_choices(model, default_lookahead: Sequence[int] | None = None, decoding: dict | None = None):
    """``model`` with the chosen default lookahead and decoding config applied (in place); returns it."""
    if default_lookahead is not None:
        set_default_lookahead(model, default_lookahead)
    if decoding:
        set_decoding(model, decoding)
    return model


def save_checked(model, output: str | Path, check_audios: Sequence[np.ndarray], fp16_weights: bool = False) -> Path:
    """Save ``model`` to ``output`` atomically, after checking that the restored file streams the same tokens as
    ``model`` on ``check_audios`` at every lookahead. ``fp16_weights`` halves the file; the check then compares with
    the weights as stored (rounded to float16), which is what restoring gives."""
    output = Path(output).resolve()
    with atomic_path(output) as partial:
        if fp16_weights:
            model.half()
        save_nemo(model, partial)
        model.float()
        restored = ASRModel.restore_from(str(partial), map_location=torch.device("cpu")).to(model.device).eval()
        expected, got = streaming_tokens(model, check_audios), streaming_tokens(restored, check_audios)
        differing = [key for key in expected if expected[key] != got.get(key)]
        if differing or list(restored.encoder.att_context_size) != list(model.encoder.att_context_size):
            raise RuntimeError(
                f"{partial}: restored model streams differently from the checkpoint at {differing} "
                f"(default lookahead {restored.encoder.att_context_size}); not written to {output}"
            )
    del restored
    release_freed_memory()  # the restored copy's 2.3 GiB for the 0.6B, before the ONNX export
    log.info(
        "Exported %s (restored and checked on %d utterances at %s)", output, len(check_audios), ", ".join(expected)
    )
    return output
