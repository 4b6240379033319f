"""Make the demo corpus:  python -m data_prep.demo_corpus [out_dir=data/demo_corpus] [seed=7]
(conf/data_prep/demo_corpus.yaml says what each key does)."""

import hydra
from omegaconf import DictConfig

from data_prep.demo_corpus.corpus import run


@hydra.main(config_path="../../conf/data_prep", config_name="demo_corpus", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
