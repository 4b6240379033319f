"""Every config and input mistake the recipes can find before compute, each as one line: key, value, fix.

A check returns its findings as lines; the entry points raise them together as one :class:`UsageError`, so a
user fixes every mistake in one go. Cheapest first, so a run stops within seconds and before any model is
built: config values (ranges, lookaheads, devices, precision), files (data present and non-empty,
checkpoints complete), then the init checkpoint's own config, read from the ``.nemo`` archive without building
the model (cache-aware, trained lookaheads, tokenizer vs decoder). NeMo is not imported here: its import alone
takes ~10 s, and a pretrained name is the only thing that needs it (to download)."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from recipes.errors import UsageError, first_line
from recipes.model_files import (
    STREAMING_CHECKPOINT,
    check_lightning_checkpoint,
    nemo_config,
    nemo_tokenizer_size,
    resolve_model_file,
)

PROB_TOLERANCE = (
    1e-6  # att_context_probs may sum to 1 up to float rounding ([0.4, 0.2, 0.2, 0.2] -> 1.0000000000000002)
)
MAX_LR = 1.0
# Lightning 2.4's precision flags.
PRECISIONS = {
    "64-true",
    "32-true",
    "16-true",
    "bf16-true",
    "16-mixed",
    "bf16-mixed",
    "transformer-engine",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
}
FP16_MIXED = {"16-mixed", "16", 16}
PREPARE_DATA = "make it with python -m data_prep corpus=<name> and python -m data_prep.blend blend=<name>"


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise UsageError("\n".join(problems))


def show(value: Any) -> str:
    """A config value as the user would type it on the command line."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return str(value).replace(" ", "") if isinstance(value, (list, dict)) else str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------- config values


def missing_values(cfg: DictConfig) -> list[str]:
    """A required (``???``) value not given; found without resolving interpolations (they may read files)."""
    try:
        OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)
    except MissingMandatoryValue as err:
        return [f"{err.full_key}: required, and not given (add {err.full_key}=...)"]
    return []


def lookahead_problems(sizes: Any, key: str) -> list[str]:
    """Each entry ``[left, right]`` must be one chunked-limited attention can cache: left a multiple of the
    chunk (right + 1 frames), right >= 0."""
    sizes = OmegaConf.to_container(sizes) if isinstance(sizes, ListConfig) else sizes
    if (
        not isinstance(sizes, list)
        or not sizes
        or not all(isinstance(s, list) and len(s) == 2 and all(is_int(v) for v in s) for s in sizes)
    ):
        return [f"{key}={show(sizes)}: give a list of [left, right] pairs in 80 ms frames, e.g. [[70,13],[70,0]]"]
    problems = []
    for left, right in sizes:
        if right < 0 or left < 0:
            problems.append(
                f"{key}={show(sizes)}: [{left},{right}] needs left >= 0 and right >= 0 (cache-aware "
                f"streaming has a bounded left context)"
            )
        elif left % (right + 1):
            fit = left // (right + 1) * (right + 1)
            problems.append(
                f"{key}={show(sizes)}: [{left},{right}]: chunked_limited attention needs left divisible "
                f"by right + 1 = {right + 1}: use [{fit},{right}] or [{fit + right + 1},{right}]"
            )
    return problems


def probs_problems(sizes: Any, probs: Any, key: str = "model.att_context_probs") -> list[str]:
    """One weight >= 0 per lookahead, summing to 1 within :data:`PROB_TOLERANCE`."""
    if probs is None:
        return []
    probs = OmegaConf.to_container(probs) if isinstance(probs, ListConfig) else probs
    if not isinstance(probs, list) or not all(is_number(p) for p in probs):
        return [f"{key}={show(probs)}: give a list of numbers, one per lookahead (or null for uniform)"]
    if len(probs) != len(sizes):
        return [
            f"{key}={show(probs)}: {len(probs)} weights for {len(sizes)} lookaheads in "
            f"model.att_context_size={show(sizes)}: give one weight per lookahead"
        ]
    if any(p < 0 for p in probs):
        return [f"{key}={show(probs)}: weights are probabilities: each must be >= 0"]
    if abs(sum(probs) - 1.0) > PROB_TOLERANCE:
        return [f"{key}={show(probs)}: the weights sum to {sum(probs):g}, not 1: give probabilities that sum to 1"]
    return []


def optim_problems(model: DictConfig) -> list[str]:
    lr = model.optim.get("lr")
    if not is_number(lr) or not 0 < lr <= MAX_LR:
        return [
            f"model.optim.lr={lr}: must be a number in (0, {MAX_LR:g}]; fine-tuning the 0.6B model "
            f"typically uses 1e-5 to 1e-4"
        ]
    problems = []
    min_lr = (model.optim.get("sched") or {}).get("min_lr")
    if min_lr is not None and (not is_number(min_lr) or min_lr > lr):
        problems.append(f"model.optim.sched.min_lr={min_lr}: must be a number <= model.optim.lr={lr}")
    return problems


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def trainer_problems(trainer: DictConfig) -> list[str]:
    """Accelerator, precision, devices and nodes against what this machine and its launcher provide; step
    counts in range."""
    problems = []
    accelerator, precision = trainer.get("accelerator", "auto"), trainer.get("precision", "32-true")
    gpus = _visible_gpus()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if accelerator in ("gpu", "cuda") and gpus == 0:
        problems.append(
            f"trainer.accelerator={accelerator}: no CUDA GPU is visible here (torch.cuda.is_available() "
            f"is False): use trainer=cpu, or run on a GPU node"
        )
    elif accelerator not in ("cpu", "gpu", "cuda", "auto"):
        problems.append(f"trainer.accelerator={accelerator}: the recipe runs on cpu or gpu")
    if precision not in PRECISIONS:
        problems.append(
            f"trainer.precision={precision}: not a Lightning precision; use 32-true, bf16-mixed "
            f"(GPU) or 16-mixed (GPUs without bfloat16)"
        )
    elif not on_gpu and precision in FP16_MIXED:
        problems.append(
            f"trainer.precision={precision}: float16 mixed precision needs a GPU; on CPU use 32-true (or bf16-mixed)"
        )
    elif on_gpu and gpus and "bf16" in str(precision) and not torch.cuda.is_bf16_supported():
        problems.append(f"trainer.precision={precision}: this GPU has no bfloat16 support: use 16-mixed")
    devices = trainer.get("devices", "auto")
    if isinstance(devices, ListConfig):
        wanted = len(devices)
    elif devices in ("auto", -1, "-1"):
        wanted = None
    elif is_int(devices) and devices >= 1:
        wanted = devices
    else:
        wanted = None
        problems.append(f"trainer.devices={devices}: give a number of devices >= 1 (or auto)")
    # GPUs only: CPU "devices" are processes (any number runs), and under SLURM each task sees its own share.
    if on_gpu and gpus and wanted and wanted > gpus and "SLURM_NTASKS" not in os.environ:
        problems.append(
            f"trainer.devices={show(devices)}: only {gpus} GPU(s) visible here: set "
            f"trainer.devices={gpus} or run where {wanted} are visible"
        )
    problems += node_problems(trainer.get("num_nodes", 1))
    max_steps = trainer.get("max_steps", -1)
    if not is_int(max_steps) or max_steps <= 0:
        problems.append(
            f"trainer.max_steps={max_steps}: must be an integer > 0: Lhotse loaders have no length, "
            f"so the step count is what ends training"
        )
    limit = trainer.get("limit_train_batches")
    if limit is not None and (not is_number(limit) or limit <= 0):
        problems.append(
            f"trainer.limit_train_batches={limit}: must be > 0 (steps per pseudo-epoch, each ends with a checkpoint)"
        )
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if not is_int(accumulate) or accumulate < 1:
        problems.append(f"trainer.accumulate_grad_batches={accumulate}: must be an integer >= 1")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_number(clip) or clip < 0):
        problems.append(f"trainer.gradient_clip_val={clip}: must be >= 0 (or null for no clipping)")
    return problems


def node_problems(num_nodes: Any) -> list[str]:
    """More than one node needs a launcher that starts the other nodes' processes; without one, rank 0 waits
    for them forever."""
    if not is_int(num_nodes) or num_nodes < 1:
        return [f"trainer.num_nodes={num_nodes}: must be an integer >= 1"]
    slurm_nodes = os.environ.get("SLURM_NNODES")
    if slurm_nodes is not None and num_nodes != int(slurm_nodes):
        return [
            f"trainer.num_nodes={num_nodes}: this SLURM job has {slurm_nodes} node(s): set "
            f"trainer.num_nodes={slurm_nodes} or sbatch --nodes={num_nodes}"
        ]
    if num_nodes > 1 and slurm_nodes is None and "WORLD_SIZE" not in os.environ:
        return [
            f"trainer.num_nodes={num_nodes}: no cluster launcher here (no SLURM job, no torchrun), so the "
            f"other nodes would never join: submit slurm/finetune.sbatch, or use torchrun on each node"
        ]
    return []


# ------------------------------------------------------------------------------------------------ files


def path_problem(path: Any, key: str, fix: str) -> str | None:
    """None when ``path`` is a non-empty file or a non-empty directory."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        return f"{key}={path}: not found: {fix}"
    if p.is_dir():
        return None if any(p.iterdir()) else f"{key}={path}: the directory is empty: {fix}"
    try:
        with gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb") as f:
            empty = not f.read(1)
    except (OSError, EOFError) as err:
        return f"{key}={path}: cannot be read ({first_line(err)}): {fix}"
    return f"{key}={path}: the file is empty: {fix}" if empty else None


def input_cfg_problems(path: str, key: str) -> list[str]:
    """NeMo's ``input_cfg``: a YAML list of datasets; every path in it must exist and hold data."""
    problem = path_problem(path, key, PREPARE_DATA)
    if problem:
        return [problem]
    try:
        entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        return [f"{key}={path}: not valid YAML ({first_line(err)}): {PREPARE_DATA}"]
    if not isinstance(entries, list) or not entries:
        return [f"{key}={path}: must be a non-empty YAML list of datasets (as data_prep.blend writes it)"]
    problems = []
    for i, entry in enumerate(entries):
        for field in ("shar_path", "cuts_path", "manifest_filepath"):
            if isinstance(entry, dict) and isinstance(entry.get(field), str):
                problem = path_problem(entry[field], f"{key} [{i}].{field}", PREPARE_DATA)
                problems += [problem] if problem else []
    return problems


def data_problems(data: DictConfig) -> list[str]:
    train = data.train_ds
    problems = []
    batch_duration, max_duration = train.get("batch_duration"), train.get("max_duration")
    if batch_duration is not None and (not is_number(batch_duration) or batch_duration <= 0):
        problems.append(f"data.train_ds.batch_duration={batch_duration}: seconds of audio per batch, must be > 0")
    if max_duration is not None and (not is_number(max_duration) or max_duration <= 0):
        problems.append(f"data.train_ds.max_duration={max_duration}: longest utterance in seconds, must be > 0")
    if train.get("use_bucketing") is False and OmegaConf.to_container(train).get("bucket_duration_bins") is not None:
        problems.append(
            "data.train_ds.use_bucketing=false: NeMo turns bucketing back on while "
            "data.train_ds.bucket_duration_bins is set: also give data.train_ds.bucket_duration_bins=null"
        )
    for field in ("cuts_path", "manifest_filepath", "shar_path"):
        if isinstance(train.get(field), str):
            problem = path_problem(train[field], f"data.train_ds.{field}", PREPARE_DATA)
            problems += [problem] if problem else []
    if isinstance(train.get("input_cfg"), str):
        problems += input_cfg_problems(train.input_cfg, "data.train_ds.input_cfg")
    validation = data.get("validation_ds") or {}
    for field in ("cuts_path", "manifest_filepath"):
        if isinstance(validation.get(field), str):
            problem = path_problem(validation[field], f"data.validation_ds.{field}", PREPARE_DATA)
            problems += [problem] if problem else []
    for name, path in (data.get("dev_sets") or {}).items():
        problem = path_problem(path, f"data.dev_sets.{name}", PREPARE_DATA)
        problems += [problem] if problem else []
    return problems


def resolve_problems(cfg: DictConfig) -> list[str]:
    """Interpolations that cannot be resolved (e.g. ``${load_yaml:...}`` of a file data_prep did not write)."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        return [
            f"{getattr(err, 'full_key', None) or 'config'}: cannot be resolved ({first_line(err)}): check "
            f"the file or key it refers to"
        ]
    return []


# --------------------------------------------------------------------------------- the init checkpoint's config


def as_lookahead_list(att_context_size: Any) -> list[list[int]]:
    sizes = OmegaConf.to_container(att_context_size) if isinstance(att_context_size, ListConfig) else att_context_size
    return [list(s) for s in sizes] if sizes and isinstance(sizes[0], (list, tuple)) else [list(sizes or [])]


def streaming_problems(encoder: DictConfig, key: str, where: str) -> list[str]:
    """Cache-aware streaming needs chunked-limited attention, causal convolutions and causal subsampling."""
    conv = encoder.get("conv_context_size")
    kernel = encoder.get("conv_kernel_size")
    causal_conv = conv == "causal" or (isinstance(conv, ListConfig) and list(conv) == [kernel - 1, 0])
    wrong = [
        f"encoder.{name}={show(value)}"
        for name, value, ok in (
            (
                "att_context_style",
                encoder.get("att_context_style"),
                encoder.get("att_context_style") == "chunked_limited",
            ),
            ("conv_context_size", conv, causal_conv),
            ("causal_downsampling", encoder.get("causal_downsampling"), encoder.get("causal_downsampling") is True),
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


# ------------------------------------------------------------------------------------------------ entry points


def check_finetune(cfg: DictConfig) -> None:
    """Every check of a fine-tuning config, in seconds and before any model is built; raises
    :class:`UsageError` with one line per mistake."""
    problems = missing_values(cfg)
    raise_problems(problems)
    model = cfg.model
    problems += lookahead_problems(model.att_context_size, "model.att_context_size")
    if not problems:
        problems += probs_problems(model.att_context_size, model.att_context_probs)
    problems += optim_problems(model) + trainer_problems(cfg.trainer) + data_problems(cfg.data)
    if not cfg.get("logger") and (cfg.get("callbacks") or {}).get("lr_monitor"):
        problems.append(
            "logger=none: callbacks.lr_monitor (Lightning's LearningRateMonitor) needs a logger: add "
            "~callbacks.lr_monitor, or keep a logger"
        )
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            problems.append(
                f"ckpt_path={cfg.ckpt_path}: no such file: give a checkpoint of the run (or ckpt_path=null)"
            )
        else:
            try:
                check_lightning_checkpoint(path, "ckpt_path")
            except UsageError as err:
                problems.append(str(err))
    checkpoint = None
    if model.init_from:
        try:
            checkpoint = resolve_model_file(model.init_from, "model.init_from", model.get("init_revision"))
        except UsageError as err:
            problems.append(str(err))
    if not problems:  # the interpolations read files the checks above have just found
        problems += resolve_problems(cfg)
    if not problems:
        problems += init_checkpoint_problems(model, checkpoint) if checkpoint else scratch_problems(model)
    raise_problems(problems)


def check_evaluate(cfg: DictConfig, model_file: bool = True) -> None:
    """``recipes.evaluate``: what to score, how, and (``model_file``) the model file, before NeMo is imported."""
    problems = missing_values(cfg)
    raise_problems(problems)
    if (cfg.data is None) == (cfg.audio is None):
        problems.append("data, audio: give exactly one of data=<cuts file or {name: cuts file}> and audio=<audio file>")
    data = cfg.data if isinstance(cfg.data, DictConfig) else ({} if cfg.data is None else {None: cfg.data})
    for name, path in data.items():
        problem = path_problem(path, "data" if name is None else f"data.{name}", "give a prepared cuts.jsonl.gz")
        problems += [problem] if problem else []
    if cfg.audio is not None and not Path(cfg.audio).is_file():
        problems.append(f"audio={cfg.audio}: no such file: give an audio file (wav, flac, ...)")
    if cfg.lookaheads is not None:
        problems += lookahead_problems(cfg.lookaheads, "lookaheads")
    for key in ("max_utterances", "batch_size"):
        value = cfg.get(key)
        if value is not None and (not is_int(value) or value < 1):
            problems.append(
                f"{key}={value}: must be an integer >= 1" + (" (or null for all)" if key == "max_utterances" else "")
            )
    try:
        if model_file:
            resolve_model_file(cfg.model, "model")
    except UsageError as err:
        problems.append(str(err))
    raise_problems(problems)


def check_interpolate(cfg: DictConfig) -> None:
    """``recipes.interpolate``'s inputs: the two sets it ranks by, the files it reads, alphas in [0, 1]."""
    sets = OmegaConf.to_container(cfg.sets)
    problems = [
        f"{key}={cfg[key]}: not one of sets ({', '.join(sets)})"
        for key in ("target_set", "general_set")
        if cfg[key] not in sets
    ]
    problems += [
        f"{name}={path}: no such file"
        for name, path in [("base", cfg.base), ("finetuned", cfg.finetuned), *sets.items()]
        if str(path).endswith((".nemo", ".ckpt", ".gz")) and not Path(path).is_file()
    ]
    if any(not 0 <= float(a) <= 1 for a in cfg.alphas):
        problems.append(f"alphas={list(cfg.alphas)}: give values in [0, 1] (0 = base, 1 = fine-tuned)")
    raise_problems(problems)
