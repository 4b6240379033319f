"""Streaming WER of a model per set and lookahead:  python -m recipes.evaluate model=<.nemo> data=<cuts>"""
import hydra
from omegaconf import DictConfig, OmegaConf

from recipes.evaluation import evaluate_model, write_report
from recipes.inference import load_model
from recipes.reports import wer_table


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    data = OmegaConf.to_container(cfg.data) if isinstance(cfg.data, DictConfig) else {"set": cfg.data}
    model = load_model(cfg.model)
    lookaheads = cfg.lookaheads or model.encoder.att_context_size_all
    report = evaluate_model(model, data, lookaheads, cfg.max_utterances, cfg.batch_size)
    if cfg.output:
        write_report({"model": cfg.model, **report}, cfg.output)
    print(wer_table({cfg.model: report["sets"]}))


if __name__ == "__main__":
    main()
