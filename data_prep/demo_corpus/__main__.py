"""Make the demo corpus:  python -m data_prep.demo_corpus [out_dir=data/demo_corpus] [seed=7]
(conf/data_prep/demo_corpus.yaml says what each key does)."""

import hydra
from omegaconf import DictConfig

from data_prep.checks import DEMO_CORPUS
from data_prep.demo_corpus.corpus import run
from data_prep.errors import DataPrepError
from recipes.errors import exit_on_usage_error, run_hydra_main


@hydra.main(config_path="../../conf/data_prep", config_name="demo_corpus", version_base="1.3")
@exit_on_usage_error("data_prep.demo_corpus")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    DEMO_CORPUS.check(cfg, DataPrepError)
    run(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "data_prep.demo_corpus")
