"""Rules about the models a config names, read from the ``.nemo`` archive or the run's ``run_config.yaml`` without
building the model: an init checkpoint that can stream (cache-aware) and holds together (tokenizer vs decoder), the
lookaheads a model was trained with, and a from-scratch architecture."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from recipes.errors import UsageError
from recipes.model_files import (
    STREAMING_CHECKPOINT,
    cached_pretrained,
    is_path_like,
    nemo_config,
    nemo_tokenizer_size,
    resolve_model_file,
)
from recipes.run_dir import run_config_of
from recipes.schema import show


def as_lookahead_list(att_context_size: Any) -> list[list[int]]:
    """``[[left, right], ...]`` from either form NeMo stores (one pair, or a list of pairs)."""
    sizes = OmegaConf.to_container(att_context_size) if isinstance(att_context_size, ListConfig) else att_context_size
    return [list(s) for s in sizes] if sizes and isinstance(sizes[0], (list, tuple)) else [list(sizes or [])]


def streaming_problems(encoder: DictConfig, key: str, where: str) -> list[str]:
    """Cache-aware streaming needs chunked-limited attention, causal convolutions and causal subsampling."""
    conv = encoder.get("conv_context_size")
    kernel = encoder.get("conv_kernel_size")
    causal_conv = conv == "causal" or (isinstance(conv, ListConfig) and list(conv) == [kernel - 1, 0])
    style, downsampling = encoder.get("att_context_style"), encoder.get("causal_downsampling")
    wrong = [
        f"encoder.{name}={show(value)}"
        for name, value, ok in (
            ("att_context_style", style, style == "chunked_limited"),
            ("conv_context_size", conv, causal_conv),
            ("causal_downsampling", downsampling, downsampling is True),
        )
        if not ok
    ]
    if not wrong:
        return []
    return [
        f"{key}: {where} is not a cache-aware streaming model ({', '.join(wrong)}): converting an offline model "
        f"to streaming rarely works; start from a streaming checkpoint such as {STREAMING_CHECKPOINT}"
    ]


def init_checkpoint_problems(model: DictConfig, checkpoint: Path) -> list[str]:
    """The restored model against the recipe's model config: cache-aware, lookaheads it was trained with
    (new ones only with ``model.allow_new_lookaheads``), tokenizer size vs decoder size."""
    key = f"model.init_from={model.init_from}"
    nemo = nemo_config(checkpoint, "model.init_from")
    problems = streaming_problems(nemo.encoder, key, "this checkpoint")
    trained = as_lookahead_list(nemo.encoder.get("att_context_size"))
    new = [s for s in as_lookahead_list(model.att_context_size) if s not in trained]
    if new and not model.get("allow_new_lookaheads", False):
        problems.append(
            f"model.att_context_size={show(model.att_context_size)}: {show(new)} never trained by "
            f"{model.init_from} (trained: {show(trained)}): keep to those, or set "
            f"model.allow_new_lookaheads=true to train new ones on purpose"
        )
    pieces = nemo_tokenizer_size(checkpoint)
    outputs = {"decoder.vocab_size": nemo.decoder.get("vocab_size"), "joint.num_classes": nemo.joint.get("num_classes")}
    wrong = {name: n for name, n in outputs.items() if pieces is not None and n is not None and n != pieces}
    if wrong:
        problems.append(
            f"{key}: its tokenizer has {pieces} pieces but its "
            + ", ".join(f"{name} is {n}" for name, n in wrong.items())
            + ": the archive's tokenizer and decoder do not belong together; use the .nemo as NeMo saved it"
        )
    return problems


def scratch_problems(model: DictConfig) -> list[str]:
    """Training from scratch: a streaming architecture and an existing SentencePiece tokenizer."""
    arch = model.architecture
    problems = streaming_problems(arch.encoder, "model.architecture", "the architecture")
    tok_dir = arch.tokenizer.get("dir")
    if not tok_dir or not (Path(tok_dir) / "tokenizer.model").is_file():
        problems.append(
            f"model.architecture.tokenizer.dir={tok_dir}: model.init_from is null (from scratch), so this "
            f"must be a SentencePiece directory with tokenizer.model (python -m data_prep.train_tokenizer)"
        )
    return problems


def model_problems(cfg: DictConfig) -> list[str]:
    """``recipes.finetune``: the init checkpoint (resolved, read) or the from-scratch architecture."""
    model = cfg.model
    if not model.init_from:
        return scratch_problems(model)
    try:
        checkpoint = resolve_model_file(model.init_from, "model.init_from", model.get("init_revision"))
    except UsageError as err:
        return err.problems
    return init_checkpoint_problems(model, checkpoint)


def nemo_encoder(model: DictConfig) -> DictConfig | None:
    """The encoder config the run builds: the architecture's from scratch, else the init checkpoint's (None when
    that cannot be read: :func:`model_problems` says why)."""
    if not model.init_from:
        return model.architecture.encoder
    try:
        return nemo_config(
            resolve_model_file(model.init_from, "model.init_from", model.get("init_revision")), ""
        ).encoder
    except UsageError:
        return None


@lru_cache(maxsize=8)
def trained_lookaheads(spec: str, key: str) -> tuple[tuple[int, int], ...] | None:
    """The lookaheads the model ``spec`` names was trained with (a ``.nemo``: its encoder config; a run's
    ``.ckpt``: the run's ``model.att_context_size``; a pretrained name: its cached ``.nemo``); None when that cannot
    be read without fetching or building the model."""
    if not is_path_like(spec):
        spec = str(cached_pretrained(spec) or "")
        if not spec:
            return None
    path = Path(spec).expanduser()
    if not path.is_file():
        return None
    if path.suffix == ".ckpt":
        run = run_config_of(path)
        sizes = OmegaConf.load(run).model.att_context_size if run.is_file() else None
    else:
        sizes = nemo_config(path, key).encoder.get("att_context_size")
    return None if sizes is None else tuple(tuple(pair) for pair in as_lookahead_list(sizes))


def untrained_lookaheads(cfg: DictConfig, key: str, model_key: str, single: bool = False) -> list[str]:
    """``cfg[key]`` (lookaheads to stream; ``single``: one pair) against those the model at ``cfg[model_key]`` was
    trained with: another one streams, but with a context the model never saw."""
    wanted = OmegaConf.select(cfg, key)
    model = OmegaConf.select(cfg, model_key)
    trained = None if wanted is None or model is None else trained_lookaheads(str(model), model_key)
    if not trained:
        return []
    pairs = [list(wanted)] if single else as_lookahead_list(wanted)
    new = [pair for pair in pairs if tuple(pair) not in trained]
    if not new:
        return []
    return [
        f"{key}={show(wanted)}: {show(new)} not trained by {model_key}={model} "
        f"(trained: {show([list(pair) for pair in trained])}): use those"
    ]
