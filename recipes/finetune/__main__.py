"""Fine-tune (or pre-train) a cache-aware streaming FastConformer-RNNT.

    python -m recipes.finetune experiment=demo_finetune
    python -m recipes.finetune model=nemotron_streaming_0.6b model.init_from=/ckpt/nemotron.nemo \
        data=my_calls trainer=ddp model.att_context_probs=[0.4,0.2,0.2,0.2]
    python -m recipes.finetune experiment=demo_finetune validate_only=true   # check the config, then exit
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from recipes.checks import check_finetune
from recipes.config import register_resolvers
from recipes.errors import EXIT_PREEMPTED, exit_on_usage_error, run_hydra_main


@hydra.main(config_path="../../conf", config_name="finetune", version_base="1.3")
@exit_on_usage_error("recipes.finetune")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    check_finetune(cfg)  # within seconds: NeMo (a ~10 s import) is not loaded yet
    if cfg.validate_only:
        print(f"recipes.finetune: configuration OK ({cfg.paths.run_dir})")
        return
    from recipes.finetune.callbacks.preemption import Preempted
    from recipes.finetune.train import train  # imports NeMo

    try:
        train(cfg)
    except Preempted as stop:  # inside the Hydra task: Hydra would turn an exception into exit status 1
        logging.getLogger(__name__).warning("Preempted (%s)", stop)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    register_resolvers()
    run_hydra_main(main, "recipes.finetune")
