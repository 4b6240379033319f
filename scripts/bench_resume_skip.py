"""What resuming costs in data loading: the time to fast-forward the training stream past the batches already
trained (``recipes.finetune.resume.ResumableBatches`` re-reads them), per batch, on a data config's real loader.

    python -m scripts.bench_resume_skip                      # demo_finetune's data, 300 batches (a full demo run)
    python -m scripts.bench_resume_skip experiment=demo_finetune batches=1000
"""

from __future__ import annotations

import sys
import time

import torch
from nemo.collections.asr.models import ASRModel

from recipes.config import CONF, REPO, compose_config
from recipes.errors import exit_on_usage_error
from recipes.finetune.train import train_data_config


@exit_on_usage_error("scripts.bench_resume_skip")
def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    batches = int(args.pop("batches", 300))
    cfg = compose_config(CONF, "finetune", [f"{k}={v}" for k, v in {"experiment": "demo_finetune", **args}.items()])
    model = ASRModel.restore_from(str(REPO / "models" / "demo_base.nemo"), map_location=torch.device("cpu"))
    model.setup_training_data(train_data_config(cfg.data.train_ds, 0))
    start = time.perf_counter()
    stream = iter(model._train_dl)
    next(stream)
    first = time.perf_counter() - start
    audio = 0.0
    start = time.perf_counter()
    for _ in range(batches):
        audio += next(stream)[1].sum().item() / 16000
    rest = time.perf_counter() - start
    print(f"first batch (opens the stream, fills the shuffle and bucket buffers): {first:.1f} s")
    print(
        f"next {batches} batches ({audio / 3600:.2f} h of audio): {rest:.1f} s, {1000 * rest / batches:.0f} ms a batch"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
