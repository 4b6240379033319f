"""Load a model for inference from whatever a user has: a ``.nemo``, a pretrained name, or a training checkpoint."""
from __future__ import annotations

import torch
from nemo.collections.asr.models import ASRModel
from omegaconf import OmegaConf

from recipes.checks import resolve_model_file, run_config_of
from recipes.model import build_model


def load_model(spec: str, key: str = "model"):
    """``spec`` is the value of ``key`` (named in any error); ``.ckpt`` files are rebuilt with the config of
    the run they belong to (``<run_dir>/run_config.yaml``)."""
    path = resolve_model_file(spec, key)
    if path.suffix == ".ckpt":
        model = build_model(OmegaConf.load(run_config_of(path)).model)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["state_dict"])
    else:
        model = ASRModel.restore_from(str(path), map_location=torch.device("cpu"))
    if torch.cuda.is_available():
        model = model.cuda()
    return model.eval()
