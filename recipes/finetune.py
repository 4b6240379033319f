"""Fine-tune (or pre-train) a cache-aware streaming FastConformer-RNNT.

    python -m recipes.finetune experiment=demo_finetune
    python -m recipes.finetune model=nemotron_streaming_0.6b model.init_from=/ckpt/nemotron.nemo \
        data=my_calls trainer=ddp model.att_context_probs=[0.4,0.2,0.2,0.2]
"""
import logging
import sys

import hydra
from omegaconf import DictConfig

from recipes import register_resolvers
from recipes.preemption import EXIT_PREEMPTED, Preempted
from recipes.training import train


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except Preempted as stop:  # inside the Hydra task: Hydra would turn an exception into exit status 1
        logging.getLogger(__name__).warning("Preempted (%s)", stop)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    register_resolvers()
    main()
