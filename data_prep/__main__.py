"""python -m data_prep corpus=<name> [key=value ...]: prepare one corpus (see docs/data_prep.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from data_prep.prepare import prepare_corpus
from recipes.errors import exit_on_usage_error, run_hydra_main


def report(summary: dict) -> str:
    if "part" in summary:
        index, count = summary["part"]
        lines = [f"{summary['corpus']}: part {index} of {count} done (merge: the same command with part.count=1)"]
        for split, s in summary["splits"].items():
            n = s["shards"]
            lines.append(f"  {split}: shards {n['mine']} of {n['total']}; reused {n['reused']}, written {n['written']}")
        return "\n".join(lines)
    lines = [f"{summary['corpus']}: prepared"]
    for split, s in summary["splits"].items():
        rows, hours = s["rows"], s["hours"]
        reasons = ", ".join(f"{k} {v['rows']}" for k, v in s["rejected_by_reason"].items()) or "none"
        lines.append(
            f"  {split}: {rows['kept']}/{rows['in']} rows kept ({hours['kept']:.2f} of {hours['in']:.2f} h); "
            f"rejected: {reasons}; shards reused {s['shards']['reused']}/{s['shards']['total']}"
        )
        lines.append(f"    {s['outputs']['cuts']}  {s['outputs']['shar']}/  {s['outputs']['rejects']}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf/data_prep", config_name="prepare")
@exit_on_usage_error("data_prep")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    print(report(prepare_corpus(cfg)))


if __name__ == "__main__":
    run_hydra_main(main, "data_prep")
