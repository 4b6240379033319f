"""WiSE-FT weight interpolation between a base model and its fine-tuned checkpoint: the trade-off table and plot,
and the chosen alpha as a ``.nemo``:

    python -m recipes.interpolate base=models/demo_base.nemo finetuned=exp/demo_finetune/checkpoints/last.ckpt
"""
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from recipes import register_resolvers
from recipes.errors import UsageError, exit_on_usage_error, run_hydra_main


def run(cfg: DictConfig) -> float:
    """Sweep, write the table, plot and report, export the chosen alpha; returns it."""
    sets = OmegaConf.to_container(cfg.sets)
    for key in ("target_set", "general_set"):
        if cfg[key] not in sets:
            raise UsageError(f"{key}={cfg[key]}: not one of sets ({', '.join(sets)})")
    for name, path in [("base", cfg.base), ("finetuned", cfg.finetuned), *sets.items()]:
        if str(path).endswith((".nemo", ".ckpt", ".gz")) and not Path(path).is_file():
            raise UsageError(f"{name}={path}: no such file")
    alphas = sorted({0.0, 1.0, *(float(a) for a in cfg.alphas)})
    if alphas[0] < 0 or alphas[-1] > 1:
        raise UsageError(f"alphas={list(cfg.alphas)}: give values in [0, 1] (0 = base, 1 = fine-tuned)")
    # NeMo's ~10 s import only once the inputs are known to be good.
    from recipes.inference import load_model
    from recipes.interpolation import check_compatible, choose_alpha, interpolate, sweep, write_outputs

    base, finetuned = load_model(cfg.base), load_model(cfg.finetuned)
    check_compatible(base, finetuned, cfg.base, cfg.finetuned)
    lookaheads = OmegaConf.to_container(cfg.lookaheads) if cfg.lookaheads else finetuned.encoder.att_context_size_all
    results = sweep(base, finetuned, sets, lookaheads, alphas, cfg.max_utterances, cfg.batch_size)
    chosen = float(cfg.alpha) if cfg.alpha is not None else choose_alpha(
        results, cfg.target_set, cfg.general_set, cfg.max_general_ratio)
    if chosen not in results:
        raise UsageError(f"alpha={chosen}: not among the alphas evaluated ({alphas})")
    header = (f"# WiSE-FT interpolation: base={cfg.base}, finetuned={cfg.finetuned}\n\n"
              f"Streaming WER (%), as written; chosen alpha {chosen:g} (lowest mean {cfg.target_set} WER with "
              f"{cfg.general_set} <= {cfg.max_general_ratio}x base at every lookahead"
              f"{'' if cfg.alpha is None else ', set by alpha='}).\n\n")
    outputs = write_outputs(results, cfg.target_set, cfg.general_set, chosen, cfg.output_dir, header)
    print(outputs["table"].read_text())
    if cfg.export:
        finetuned.load_state_dict(interpolate(base.state_dict(), finetuned.state_dict(), chosen))
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        finetuned.save_to(str(Path(cfg.export).resolve()))
        print(f"alpha {chosen:g} saved to {cfg.export}")
    return chosen


@hydra.main(config_path="../conf", config_name="interpolate", version_base="1.3")
@exit_on_usage_error("recipes.interpolate")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    register_resolvers()
    run_hydra_main(main, "recipes.interpolate")
