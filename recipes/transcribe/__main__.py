"""Transcripts of your own audio at the latency you deploy, streamed chunk by chunk like a live stream:

python -m recipes.transcribe model=<.nemo|.ckpt|pretrained name> audio=<file|folder|NeMo manifest|cuts> \
    [output=transcripts.jsonl] [lookahead=560|[70,6]] [channel=mix|each|0] [captions=srt|vtt]
"""

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from recipes.checks import check_transcribe
from recipes.config import CONF
from recipes.errors import exit_on_usage_error, run_hydra_main

# Stored by name rather than found in conf/: there ``model`` is a config group (the training recipe's).
ConfigStore.instance().store(name="transcribe", node=OmegaConf.load(CONF / "transcribe.yaml"))


@hydra.main(config_path=None, config_name="transcribe", version_base="1.3")
@exit_on_usage_error("recipes.transcribe")
def main(cfg: DictConfig) -> None:
    check_transcribe(cfg)  # within seconds: NeMo (a ~10 s import) is not loaded yet
    from recipes.transcribe.run import transcribe

    transcribe(cfg)


if __name__ == "__main__":
    run_hydra_main(main, "recipes.transcribe")
