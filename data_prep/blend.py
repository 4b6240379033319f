"""Blending prepared corpora into one training mix for NeMo's Lhotse dataloader.

``python -m data_prep.blend blend=<name>`` reads ``conf/data_prep/blend/<name>.yaml`` (corpora and weights)
and writes, under ``<out_root>/blends/<name>/``:

- ``input_cfg.yaml``: the list NeMo's ``train_ds.input_cfg`` accepts, one ``lhotse_shar`` entry per corpus,
  with its weight and a ``corpus`` tag. Weights are sampling probabilities per cut, so a 0.2 replay
  share means about one cut in five comes from the general data.
- ``duration_bins.yaml``: bucket bins estimated over the weighted mix (what the training stream sees).
- ``blend.json``: what went into the mix (hours and cuts per corpus, weights).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Mapping

import hydra
import yaml
from lhotse import CutSet
from omegaconf import DictConfig, OmegaConf

from data_prep.bins import estimate_bins, write_bins
from data_prep.checks import BLEND
from data_prep.errors import DataPrepError
from data_prep.prepare import split_dir
from data_prep.settings import resolve_config
from data_prep.summary import write_json
from recipes.errors import exit_on_usage_error, run_hydra_main


def _prepared(out_root: Path, corpus: str, split: str) -> dict:
    """The summary of a prepared split; stops with one message if the split is not (completely) there."""
    summary_path = split_dir(out_root, corpus, split) / "summary.json"
    if not summary_path.is_file():
        raise DataPrepError(
            f"corpus {corpus!r} split {split!r} is not prepared (no {summary_path}): "
            f"run python -m data_prep corpus={corpus} out_root={out_root} first"
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if summary["rows"]["kept"] == 0:
        raise DataPrepError(f"corpus {corpus!r} split {split!r} kept no rows: nothing to blend (see {summary_path})")
    return summary


def write_blend(cfg: Mapping) -> dict:
    """Write the blend described by the composed ``blend`` config; returns the contents of blend.json."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    BLEND.check(cfg, DataPrepError)  # the keys' types and ranges (data_prep/checks.py)
    conf = resolve_config(cfg)
    blend, out_root = conf["blend"], Path(conf["out_root"])
    name, split, corpora = blend["name"], blend.get("split", "train"), blend["corpora"]
    num_buckets = conf.get("num_buckets", 30)
    summaries = {item["corpus"]: _prepared(out_root, item["corpus"], split) for item in corpora}

    out_dir = out_root / "blends" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    input_cfg = [
        {
            "type": "lhotse_shar",
            "shar_path": str(split_dir(out_root, item["corpus"], split) / "shar"),
            "weight": float(item["weight"]),
            "tags": {"corpus": item["corpus"]},
        }
        for item in corpora
    ]
    input_cfg_path = out_dir / "input_cfg.yaml"
    input_cfg_path.write_text(
        f"# NeMo train_ds.input_cfg for blend {name!r} (written by python -m data_prep.blend)\n"
        + yaml.safe_dump(input_cfg, sort_keys=False),
        encoding="utf-8",
    )

    # The training stream samples cuts by weight: estimate the bins over such a sample.
    cutsets = [CutSet.from_jsonl_lazy(split_dir(out_root, item["corpus"], split) / "cuts.jsonl.gz") for item in corpora]
    total = sum(s["rows"]["kept"] for s in summaries.values())
    mix = CutSet.infinite_mux(*cutsets, weights=[item["weight"] for item in corpora], seed=conf.get("seed", 0))
    bins = estimate_bins(itertools.islice(mix, total), total, num_buckets)
    bins_path = out_dir / "duration_bins.yaml"
    write_bins(bins_path, bins, f"blend {name!r}")

    weight_sum = sum(item["weight"] for item in corpora)
    info = {
        "name": name,
        "split": split,
        "input_cfg": str(input_cfg_path),
        "duration_bins": str(bins_path),
        "corpora": [
            {
                "corpus": item["corpus"],
                "weight": item["weight"],
                "share_of_sampled_cuts": round(item["weight"] / weight_sum, 4),
                "cuts": summaries[item["corpus"]]["rows"]["kept"],
                "hours": summaries[item["corpus"]]["hours"]["kept"],
            }
            for item in corpora
        ],
    }
    write_json(out_dir / "blend.json", info)
    return info


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="blend")
@exit_on_usage_error("data_prep.blend")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    info = write_blend(cfg)
    shares = ", ".join(f"{c['corpus']} {c['share_of_sampled_cuts']:.0%} ({c['hours']:.2f} h)" for c in info["corpora"])
    print(f"blend {info['name']}: {shares}\n  {info['input_cfg']}\n  {info['duration_bins']}")


if __name__ == "__main__":
    run_hydra_main(main, "data_prep.blend")
