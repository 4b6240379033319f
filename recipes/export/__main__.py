"""Export a fine-tuning run:  python -m recipes.export run_dir=exp/demo_finetune [checkpoint=best] [average.select=last]
[onnx.output_dir=exp/demo_finetune/onnx]   (conf/export.yaml says what each key does)."""

import json

import hydra
from omegaconf import DictConfig

from recipes.config import register_resolvers
from recipes.errors import exit_on_usage_error, run_hydra_main
from recipes.export.pipeline import run


@hydra.main(config_path="../../conf", config_name="export", version_base="1.3")
@exit_on_usage_error("recipes.export")  # inside Hydra's main, which would print a traceback
def main(cfg: DictConfig) -> None:
    print(json.dumps(run(cfg), indent=1))


if __name__ == "__main__":
    register_resolvers()
    run_hydra_main(main, "recipes.export")
