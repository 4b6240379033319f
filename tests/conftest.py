"""Shared fixtures: a small demo corpus, prepared with the real data_prep path, in a scratch working directory."""

import json
from pathlib import Path

import pytest

from recipes.config import CONF, compose_config
from tests.support.runs import training_runs  # noqa: F401 (a fixture for every test module)
from tests.support.slurm_jobs import one_node_reference, slurm  # noqa: F401 (shared by the Slurm tests)
from tests.support.streaming import one_thread, random_model  # noqa: F401 (fixtures for every test module)

SIZES = {"general": {"train": 48, "dev": 10}, "target": {"train": 32, "dev": 10}}


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
    """A directory laid out like the repository after demo stages 1-2 (corpus, prepared Shar, blend, tokenizer),
    made with the same configs the demo uses, only smaller."""
    from data_prep.blend import write_blend
    from data_prep.demo_corpus.corpus import make_demo_corpus
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
