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

from recipes.allocator import keep_freed_memory
from recipes.checks import check_finetune
from recipes.config import CONF, compose_config
from recipes.errors import EXIT_PREEMPTED, UsageError, exit_on_usage_error, run_hydra_main


def check_command_line(overrides: list[str]) -> None:
    """Every config check, within seconds and before Hydra creates the run directory (under ``paths.exp_dir``) or
    NeMo (a ~10 s import) is loaded; a composition error is left to Hydra's main, which reports it."""
    try:
        cfg = compose_config(CONF, "finetune", overrides)
    except UsageError:
        return
    check_finetune(cfg)


@hydra.main(config_path="../../conf", config_name="finetune", version_base="1.3")
@exit_on_usage_error("recipes.finetune")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    if cfg.validate_only:
        check_finetune(cfg)
        print(f"recipes.finetune: configuration OK ({cfg.paths.run_dir})")
        return
    from recipes.finetune.callbacks.preemption import Preempted
    from recipes.finetune.train import train  # imports NeMo; checks the config again (train() is a library call)

    keep_freed_memory()  # a step's tensors reused, not faulted in again: 9 % faster steps (docs/training_throughput.md)
    try:
        train(cfg)
    except Preempted as stop:  # inside the Hydra task: Hydra would turn an exception into exit status 1
        logging.getLogger(__name__).warning("Preempted (%s)", stop)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    run_hydra_main(main, "recipes.finetune", check=check_command_line)
