"""Turn a training checkpoint into a self-contained ``.nemo`` (weights, config, tokenizer)."""
from __future__ import annotations

import logging
from pathlib import Path

from recipes.checks import export_checkpoint
from recipes.inference import load_model

log = logging.getLogger(__name__)


def export_nemo(run_dir: str | Path, checkpoint: str, output: str | Path, fp16_weights: bool = False) -> Path:
    """Rebuild the run's model as training built it, load the checkpoint's weights and save a ``.nemo``
    that ``ASRModel.restore_from`` loads on its own. ``fp16_weights`` halves the file; restoring casts the
    weights back to the model's float32."""
    ckpt_path = export_checkpoint(run_dir, checkpoint)
    model = load_model(str(ckpt_path), key="checkpoint")
    if fp16_weights:
        model = model.half()
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_to(str(output))
    log.info("Exported %s -> %s", ckpt_path, output)
    return output
