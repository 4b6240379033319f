"""Export a fine-tuning checkpoint to ``.nemo``:  python -m recipes.export run_dir=exp/demo_finetune"""
import hydra
from omegaconf import DictConfig

from recipes import register_resolvers
from recipes.exporting import export_nemo


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(export_nemo(cfg.run_dir, cfg.checkpoint, cfg.output, cfg.fp16_weights))


if __name__ == "__main__":
    register_resolvers()
    main()
