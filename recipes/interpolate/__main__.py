"""WiSE-FT weight interpolation between a base model and its fine-tuned checkpoint: the trade-off table and plot,
and the chosen alpha as a ``.nemo``:

    python -m recipes.interpolate base=models/demo_base.nemo finetuned=exp/demo_finetune/checkpoints/last.ckpt
"""

import hydra
from omegaconf import DictConfig

from recipes.checks import check_interpolate
from recipes.errors import exit_on_usage_error, run_hydra_main


@hydra.main(config_path="../../conf", config_name="interpolate", version_base="1.3")
@exit_on_usage_error("recipes.interpolate")
def main(cfg: DictConfig) -> None:
    check_interpolate(cfg)  # within seconds: NeMo (a ~10 s import) is not loaded yet
    from recipes.interpolate.wise import run

    run(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "recipes.interpolate")
