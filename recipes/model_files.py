"""Model files a user names: a .nemo, a Lightning .ckpt or a pretrained name, resolved and checked readable without importing NeMo, and loaded for inference."""

from __future__ import annotations

import hashlib
import os
import socket
import tarfile
import zipfile
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from recipes.errors import UsageError, first_line
from recipes.run_dir import run_config_of

STREAMING_CHECKPOINT = "nvidia/nemotron-speech-streaming-en-0.6b"


# ----------------------------------------------------------------------------------------------- checkpoints


def nemo_config(path: Path, key: str) -> DictConfig:
    """The model config inside a ``.nemo`` (a tar archive), read without building the model. Raises a
    :class:`UsageError` naming ``key`` and the file when the archive is truncated, corrupt or not a ``.nemo``."""
    redo = "copy or download it again"
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            size = path.stat().st_size
            short = next((m.name for m in members if m.isfile() and m.offset_data + m.size > size), None)
            if short:
                raise UsageError(
                    f"{key}={path}: the .nemo is truncated ({Path(short).name} runs past the end of the file): {redo}"
                )
            by_name = {Path(m.name).name: m for m in members}
            if "model_config.yaml" not in by_name or "model_weights.ckpt" not in by_name:
                raise UsageError(
                    f"{key}={path}: not a .nemo model (no model_config.yaml and model_weights.ckpt "
                    f"inside): give a .nemo saved by NeMo"
                )
            return OmegaConf.create(yaml.safe_load(tar.extractfile(by_name["model_config.yaml"])))
    except (tarfile.TarError, EOFError, OSError, yaml.YAMLError) as err:
        raise UsageError(
            f"{key}={path}: not a readable .nemo archive ({first_line(err)}): the file is truncated or corrupt; {redo}"
        ) from None


def check_lightning_checkpoint(path: Path, key: str) -> None:
    """A Lightning ``.ckpt`` is a zip archive (``torch.save``); a truncated one has lost its central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                raise UsageError(f"{key}={path}: not a PyTorch checkpoint (no data.pkl inside)")
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(
            f"{key}={path}: not a readable checkpoint ({first_line(err)}): the file is truncated or "
            f"corrupt; use another checkpoint of the run"
        ) from None


def is_path_like(spec: str) -> bool:
    """A ``.nemo``/``.ckpt`` or anything written like a path; otherwise ``spec`` is a pretrained model name."""
    return Path(spec).suffix in (".nemo", ".ckpt") or spec.startswith(("/", ".", "~")) or Path(spec).exists()


def hub_reachable(name: str, timeout: float = 3.0) -> bool:
    """Whether the hub NeMo fetches ``name`` from answers (Hugging Face for ``org/name``, NGC otherwise)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":  # Hugging Face's own switch for "no network"
        return False
    host = "huggingface.co" if "/" in name else "api.ngc.nvidia.com"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def pretrained_cache_dir(name: str) -> Path:
    """Where huggingface_hub keeps ``name``: ``refs/<branch or tag>`` (the commit each one was last fetched at)
    and ``snapshots/<commit>/`` (the files)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}"


def cached_pretrained(name: str, revision: str | None = None, key: str = "model.init_from") -> Path | None:
    """The ``.nemo`` of ``name`` at ``revision`` (a branch, a tag or a commit, abbreviated or not; None: the hub's
    main branch) already in the Hugging Face cache, found through the cache's own refs: a newer snapshot of main
    is the one ``refs/main`` names, whatever the hashes' order."""
    repo = pretrained_cache_dir(name)
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    if not commit:
        return None
    found = sorted(p for p in (repo / "snapshots").glob("*/*.nemo") if p.parent.name.startswith(commit))
    if len({p.parent for p in found}) > 1:
        raise UsageError(
            f"{key}={name}: revision {commit} matches {len(found)} cached snapshots "
            f"({', '.join(p.parent.name[:12] for p in found)}): give more of the commit hash"
        )
    return found[0] if found else None


def fetch_pretrained(name: str, revision: str | None, key: str) -> Path:
    """Download ``name`` at ``revision`` from the hub: the Hugging Face Hub for ``org/name`` (any revision), else
    NGC through NeMo (its latest version only)."""
    try:
        if "/" not in name:
            if revision:
                raise UsageError(
                    f"model.init_revision={revision}: revisions are for Hugging Face names (org/name), "
                    f"not {key}={name}: drop it"
                )
            from nemo.collections.asr.models import ASRModel

            return Path(ASRModel.from_pretrained(name, return_model_file=True))
        from huggingface_hub import HfApi, hf_hub_download

        files = [f for f in HfApi().list_repo_files(name, revision=revision) if f.endswith(".nemo")]
        if len(files) != 1:
            raise UsageError(f"{key}={name}: expected one .nemo in the repository, found {files or 'none'}")
        return Path(hf_hub_download(name, files[0], revision=revision))
    except UsageError:
        raise
    except Exception as err:  # the hub clients raise their own errors for an unknown name or revision
        raise UsageError(
            f"{key}={name}: not a file, and it could not be fetched as a pretrained model at revision "
            f"{revision or 'main'} ({first_line(err)}): check the name and revision, or pass the path of a .nemo"
        ) from None


def file_record(path: Path, spec: str, revision: str | None) -> dict:
    """What a run records of the model file it started from: the name or path given, the revision, the local file
    it resolved to and its SHA-256 (so the same weights can be found again, whatever the hub serves later)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return {"given": spec, "revision": revision, "path": str(Path(path).resolve()), "sha256": digest.hexdigest()}


def resolve_model_file(spec: str, key: str, revision: str | None = None) -> Path:
    """The local ``.nemo`` or ``.ckpt`` that ``spec`` (the value of ``key``) names, checked to be complete; a
    pretrained name (at ``revision``) is taken from the local cache, else fetched from the hub. Raises
    :class:`UsageError` otherwise."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if is_path_like(spec):
        if not path.is_file():
            raise UsageError(f"{key}={spec}: no such file: give the path of a .nemo (or of a run's .ckpt)")
        if path.suffix == ".ckpt":
            check_lightning_checkpoint(path, key)
            if not run_config_of(path).is_file():
                raise UsageError(
                    f"{key}={spec}: a .ckpt is rebuilt with its run's config, expected at "
                    f"{run_config_of(path)}: give a checkpoint inside <run_dir>/checkpoints/, or a .nemo"
                )
        else:
            nemo_config(path, key)
        return path
    cached = cached_pretrained(spec, revision, key)
    if cached:
        return cached
    if not hub_reachable(spec):
        raise UsageError(
            f"{key}={spec}: not a file, no cached copy at revision {revision or 'main'}, and no network to fetch "
            f"it from here: download the .nemo where there is network and pass its path ({key}=/path/model.nemo)"
        )
    return fetch_pretrained(spec, revision, key)


def nemo_tokenizer_size(path: Path) -> int | None:
    """Pieces of the SentencePiece tokenizer inside a ``.nemo`` (None when it has none)."""
    import sentencepiece as spm

    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("tokenizer.model")), None)
        if member is None:
            return None
        return spm.SentencePieceProcessor(model_proto=tar.extractfile(member).read()).get_piece_size()


def resolve_checkpoint(run_dir: str | Path, checkpoint: str) -> Path:
    """``checkpoint`` as a path, or as a file name (``.ckpt`` optional) inside ``<run_dir>/checkpoints``; checked."""
    run_dir = Path(run_dir)
    for candidate in (
        Path(checkpoint),
        run_dir / "checkpoints" / checkpoint,
        run_dir / "checkpoints" / f"{checkpoint}.ckpt",
    ):
        if candidate.is_file():
            return resolve_model_file(str(candidate), "checkpoint")
    raise UsageError(
        f"checkpoint={checkpoint}: not found as a path or in {run_dir / 'checkpoints'}: give a file "
        f"name there (e.g. checkpoint=last) or a path (and check run_dir={run_dir})"
    )


def load_model(spec: str, key: str = "model"):
    """``spec`` is the value of ``key`` (named in any error); ``.ckpt`` files are rebuilt with the config of
    the run they belong to (``<run_dir>/run_config.yaml``)."""
    from nemo.collections.asr.models import ASRModel  # NeMo's ~10 s import only where a model is loaded

    from recipes.finetune.model import build_model, release_freed_memory

    path = resolve_model_file(spec, key)
    if path.suffix == ".ckpt":
        run = OmegaConf.load(run_config_of(path))
        recorded = run.get("init_from_file")
        if recorded and Path(recorded.path).is_file():  # the very file training started from: no hub needed
            run.model.init_from, run.model.init_revision = recorded.path, None
        model = build_model(run.model)
        # Memory-mapped: a last.ckpt's optimizer state (twice the weights with AdamW) is never read.
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["state_dict"])
    else:
        model = ASRModel.restore_from(str(path), map_location=torch.device("cpu"))
    release_freed_memory()
    if torch.cuda.is_available():
        model = model.cuda()
    return model.eval()
