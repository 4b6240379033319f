"""What resuming costs in data loading: the time to fast-forward the training stream past the batches already
trained (``recipes.resume.ResumableBatches`` re-reads them), per batch, on a data config's real loader.

    python scripts/bench_resume_skip.py                      # demo_finetune's data, 300 batches (a full demo run)
    python scripts/bench_resume_skip.py experiment=demo_finetune batches=1000
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from nemo.collections.asr.models import ASRModel

from recipes import register_resolvers
from recipes.training import train_data_config

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    batches = int(args.pop("batches", 300))
    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("finetune", [f"{k}={v}" for k, v in {"experiment": "demo_finetune", **args}.items()])
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
    print(f"next {batches} batches ({audio / 3600:.2f} h of audio): {rest:.1f} s, {1000 * rest / batches:.0f} ms a batch")


if __name__ == "__main__":
    main(sys.argv[1:])
