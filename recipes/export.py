"""Export a fine-tuning checkpoint to ``.nemo``:  python -m recipes.export run_dir=exp/demo_finetune"""
import hydra
from omegaconf import DictConfig

from recipes import register_resolvers
from recipes.errors import exit_on_usage_error, run_hydra_main
from recipes.checks import export_checkpoint


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
@exit_on_usage_error("recipes.export")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    export_checkpoint(cfg.run_dir, cfg.checkpoint)  # before NeMo's ~10 s import
    from recipes.exporting import export_nemo

    print(export_nemo(cfg.run_dir, cfg.checkpoint, cfg.output, cfg.fp16_weights))


if __name__ == "__main__":
    register_resolvers()
    run_hydra_main(main, "recipes.export")
