"""Shared fixtures: a small demo corpus, prepared with the real data_prep path, in a scratch working directory."""
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from recipes import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
BASE_MODEL = REPO / "models" / "demo_base.nemo"

SIZES = {"general": {"train": 48, "dev": 10}, "target": {"train": 32, "dev": 10}}


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a recipe process it starts, plus ``extra``. Without ``WANDB_SERVICE``: wandb
    exports it once this process has logged a run in-process, and a child would then attach to this process's wandb
    service, which still holds a killed child's run id ("run ID is in use" when the same run resumes)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, **extra}


def compose_config(config_dir: Path, name: str, overrides=()):
    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
    """A directory laid out like the repository after demo stages 1-2 (corpus, prepared Shar, blend, tokenizer),
    made with the same configs the demo uses, only smaller."""
    from data_prep.blend import write_blend
    from data_prep.demo_corpus import make_demo_corpus
    from data_prep.prepare import prepare_corpus
    from data_prep.tokenizer import train_sentencepiece

    workdir = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        make_demo_corpus("data/demo_corpus", seed=7, sizes=SIZES, num_workers=2)
        for corpus in ("demo_general", "demo_target"):
            prepare_corpus(compose_config(CONF / "data_prep", "prepare", [f"corpus={corpus}", "progress=false"]))
        write_blend(compose_config(CONF / "data_prep", "blend", ["blend=demo_replay", "num_buckets=2"]))
        lines = Path("data/demo_corpus/general/train.jsonl").read_text().splitlines()
        train_sentencepiece([json.loads(line)["text"] for line in lines], "data/tokenizers/demo_general", 64)
    return workdir


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
