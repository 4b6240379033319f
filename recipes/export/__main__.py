"""Export a fine-tuning run:  python -m recipes.export run_dir=exp/demo_finetune [checkpoint=best] [average.select=last]
[onnx.output_dir=exp/demo_finetune/onnx]   (conf/export.yaml says what each key does)."""

import json

import hydra
from omegaconf import DictConfig

from recipes.checks import check_export
from recipes.errors import exit_on_usage_error, run_hydra_main


@hydra.main(config_path="../../conf", config_name="export", version_base="1.3")
@exit_on_usage_error("recipes.export")  # inside Hydra's main, which would print a traceback
def main(cfg: DictConfig) -> None:
    check_export(cfg)  # within seconds: NeMo (a ~10 s import) is not loaded yet
    from recipes.export.pipeline import run

    print(json.dumps(run(cfg), indent=1))


if __name__ == "__main__":
    run_hydra_main(main, "recipes.export")
