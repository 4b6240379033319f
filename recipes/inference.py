"""Load a model for inference from whatever a user has: a ``.nemo``, a pretrained name, or a training checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
from nemo.collections.asr.models import ASRModel
from omegaconf import OmegaConf

from recipes.model import build_model, resolve_init_checkpoint
from recipes.training import RUN_CONFIG


def load_model(spec: str):
    """``.ckpt`` files are rebuilt with the config of the run they belong to (``<run_dir>/run_config.yaml``)."""
    path = Path(spec)
    if path.suffix == ".ckpt":
        run_cfg = path.parent.parent / RUN_CONFIG
        if not run_cfg.is_file():
            raise FileNotFoundError(f"{spec}: expected its run's config at {run_cfg}")
        model = build_model(OmegaConf.load(run_cfg).model)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    else:
        model = ASRModel.restore_from(str(resolve_init_checkpoint(spec)), map_location=torch.device("cpu"))
    if torch.cuda.is_available():
        model = model.cuda()
    return model.eval()
