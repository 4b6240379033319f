"""Streaming WER of a model per set and lookahead, or one file streamed live:

    python -m recipes.evaluate model=<.nemo|ckpt> data=<cuts or {name: cuts}> [check_offline=true]
    python -m recipes.evaluate model=<.nemo|ckpt> audio=<wav/flac> [lookaheads=[[70,1]]]
"""
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_evaluate
from recipes.errors import exit_on_usage_error, run_hydra_main


def run(cfg: DictConfig, model=None) -> dict:
    """Evaluate (``data``) or stream one file (``audio``) as ``cfg`` says; returns the report or final transcripts."""
    check_evaluate(cfg, model_file=model is None)
    # NeMo's ~10 s import only once the inputs are known to be good.
    from recipes.evaluation import evaluate_model, show_partials, write_report
    from recipes.inference import load_model
    from recipes.reports import latency_table, wer_table

    model = model if model is not None else load_model(cfg.model, key="model")
    lookaheads = OmegaConf.to_container(cfg.lookaheads) if cfg.lookaheads else model.encoder.att_context_size_all
    if cfg.audio is not None:
        return show_partials(model, cfg.audio, lookaheads)
    data = OmegaConf.to_container(cfg.data) if isinstance(cfg.data, DictConfig) else {"set": cfg.data}
    report = evaluate_model(model, data, lookaheads, cfg.max_utterances, cfg.batch_size, cfg.check_offline)
    if cfg.output:
        write_report({"model": cfg.model, **report}, cfg.output)
    print(wer_table({cfg.model: report["sets"]}))
    print()
    print(latency_table(report["sets"]))
    return report


CONFIG = Path(__file__).resolve().parents[1] / "conf" / "evaluate.yaml"
# Stored by name rather than found in conf/: there ``model`` is a config group (the training recipe's), and Hydra
# would read ``model=<path>`` as a choice of that group.
ConfigStore.instance().store(name="evaluate", node=OmegaConf.load(CONFIG))


@hydra.main(config_path=None, config_name="evaluate", version_base="1.3")
@exit_on_usage_error("recipes.evaluate")  # inside Hydra's job: no "Error executing job" line
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "recipes.evaluate")
