"""Config composition and the full-size architecture (config mistakes: tests/test_config_checks.py)."""

import pytest
from omegaconf import OmegaConf

from recipes.config import CONF, compose_config
from recipes.finetune.model import normalised_probs


def compose_finetune(overrides=()):
    return compose_config(CONF, "finetune", overrides)


@pytest.mark.parametrize("experiment", ["demo_pretrain", "demo_continuous", "demo_finetune"])
def test_experiments_compose_with_every_group(experiment):
    cfg = compose_finetune([f"experiment={experiment}"])
    assert cfg.run_name == experiment
    assert cfg.callbacks.checkpoint.lookaheads == cfg.model.att_context_size
    assert cfg.paths.run_dir.endswith(f"exp/{experiment}")
    # Everything but values read from prepared data resolves at compose time.
    OmegaConf.to_container(cfg.model, resolve=True)
    OmegaConf.to_container(cfg.trainer, resolve=True)


def test_lookahead_probabilities_from_the_command_line_sum_to_exactly_one():
    cfg = compose_finetune(["model.att_context_probs=[0.4,0.2,0.2,0.2]"])
    probs = normalised_probs(cfg.model.att_context_size, cfg.model.att_context_probs)
    assert sum(probs) == 1.0 and probs[0] == pytest.approx(0.4)
    assert normalised_probs([[70, 13], [70, 0]], [1, 2]) == pytest.approx([1 / 3, 2 / 3])
    assert sum(normalised_probs([[70, 1]] * 3, None)) == 1.0


def test_full_size_config_is_the_0_6b_model_with_its_streaming_caches():
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    cfg = compose_finetune(["model=nemotron_streaming_0.6b"])
    arch = OmegaConf.to_container(cfg.model.architecture, resolve=True)
    arch["joint"]["jointnet"].update(
        encoder_hidden=arch["model_defaults"]["enc_hidden"], pred_hidden=arch["model_defaults"]["pred_hidden"]
    )
    modules = {name: EncDecRNNTBPEModel.from_config_dict(arch[name]) for name in ("encoder", "decoder", "joint")}
    params = sum(p.numel() for m in modules.values() for p in m.parameters())
    assert 0.95 * 600e6 <= params <= 1.05 * 600e6, params
    encoder = modules["encoder"]
    assert encoder.att_context_size_all == [[70, 13], [70, 6], [70, 1], [70, 0]]
    encoder.setup_streaming_params()
    cache_channel, cache_time, _ = encoder.get_initial_cache_state(batch_size=1)
    assert tuple(cache_channel.shape) == (24, 1, 70, 1024)  # attention cache: 70 frames x d_model per layer
    assert tuple(cache_time.shape) == (24, 1, 1024, 8)  # causal conv cache: kernel 9 - 1
