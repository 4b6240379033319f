"""The embedded demo model, and copies of it with an edited config (weights untouched)."""

import io
import tarfile
from pathlib import Path

import yaml

from recipes.config import REPO

BASE_MODEL = REPO / "models" / "demo_base.nemo"


def nemo_with(path: Path, edit) -> Path:
    """A copy of the demo base model whose model_config.yaml went through ``edit`` (weights untouched)."""
    with tarfile.open(BASE_MODEL) as src, tarfile.open(path, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("model_config.yaml"):
                config = yaml.safe_load(data)
                edit(config)
                data = yaml.safe_dump(config).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return path
