"""Streaming WER of a model per set and lookahead, or one file streamed live:

python -m recipes.evaluate model=<.nemo|ckpt> data=<cuts or {name: cuts}> [check_offline=true]
python -m recipes.evaluate model=<.nemo|ckpt> audio=<wav/flac> [lookaheads=[[70,1]]]
"""

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_evaluate
from recipes.config import CONF
from recipes.errors import exit_on_usage_error, run_hydra_main

# Stored by name rather than found in conf/: there ``model`` is a config group (the training recipe's), and Hydra
# would read ``model=<path>`` as a choice of that group.
ConfigStore.instance().store(name="evaluate", node=OmegaConf.load(CONF / "evaluate.yaml"))


@hydra.main(config_path=None, config_name="evaluate", version_base="1.3")
@exit_on_usage_error("recipes.evaluate")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    check_evaluate(cfg)  # within seconds: NeMo (a ~10 s import) is not loaded yet
    from recipes.evaluate.run import run

    run(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "recipes.evaluate")
