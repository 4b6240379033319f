"""Export: checkpoint averaging and ranking, the checked .nemo round trip, and config mistakes.

A small run is made from the demo base model: its real run config and checkpoints of its real weights, moved apart
by known amounts, so averages and rankings have values to check.
"""

import json
from pathlib import Path

import pytest
import torch
from nemo.collections.asr.models import ASRModel
from omegaconf import OmegaConf

from recipes.config import CONF, compose_config
from recipes.errors import UsageError
from recipes.evaluate.reports import REPORT_SUFFIX
from recipes.evaluate.sets import load_eval_set
from recipes.export.card import ranking_line
from recipes.export.checkpoints import (
    RankBy,
    average_checkpoints,
    average_state_dicts,
    best_checkpoints,
    last_checkpoints,
)
from recipes.export.nemo import streaming_tokens
from recipes.export.pipeline import run
from recipes.model_files import load_model, resolve_checkpoint
from recipes.run_dir import RUN_CONFIG
from tests.support.runs import checkpointed_run

STEPS = (100, 200, 300)
WER_AT_1120 = {100: 0.30, 200: 0.10, 300: 0.20}  # step 200 best, then 300


@pytest.fixture(scope="module")
def run_dir(demo_workdir, tmp_path_factory):
    """<run>/run_config.yaml (the demo fine-tuning config) and three checkpoints with streaming reports."""
    run = tmp_path_factory.mktemp("run")
    for step, path in zip(STEPS, checkpointed_run(demo_workdir, run, STEPS, max_utterances=4)):
        report = {
            "step": step,
            "sets": {
                "general_dev": {
                    "1120ms": {"wer": WER_AT_1120[step], "wer_normalized": 0.0},
                    "80ms": {"wer": 0.5, "wer_normalized": 0.0},
                }
            },
        }
        Path(f"{path}{REPORT_SUFFIX}").write_text(json.dumps(report))
    torch.save(torch.load(path, weights_only=False), run / "checkpoints" / "last.ckpt")
    return run


def test_average_is_the_mean_of_the_checkpoints_float_tensors(run_dir, tmp_path):
    paths = last_checkpoints(run_dir, 2)
    assert [p.name for p in paths] == ["step000200.ckpt", "step000300.ckpt"]  # last.ckpt is not a third
    averaged = torch.load(average_checkpoints(paths, tmp_path / "avg.ckpt"), weights_only=False)
    inputs = [torch.load(p, weights_only=False)["state_dict"] for p in paths]
    assert averaged["state_dict"].keys() == inputs[0].keys()
    for name, value in averaged["state_dict"].items():
        torch.testing.assert_close(value, (inputs[0][name] + inputs[1][name]) / 2, rtol=0, atol=1e-6)
    assert averaged["global_step"] == 300 and averaged["averaged_from"] == [str(p) for p in paths]
    assert [p.name for p in tmp_path.iterdir()] == ["avg.ckpt"]  # written under a temporary name, then renamed


def test_integer_buffers_are_not_averaged():
    """BatchNorm's step counter: the newest model's count, not a mean of counts (the demo model has no BatchNorm)."""
    states = []
    for steps in (3, 8):
        norm = torch.nn.BatchNorm1d(4)
        for _ in range(steps):
            norm(torch.randn(16, 4))
        states.append({k: v.clone() for k, v in norm.state_dict().items()})
    averaged = average_state_dicts(states)
    assert averaged["num_batches_tracked"].item() == 8 and averaged["num_batches_tracked"].dtype == torch.int64
    torch.testing.assert_close(averaged["running_mean"], (states[0]["running_mean"] + states[1]["running_mean"]) / 2)


def test_best_checkpoints_are_ranked_by_the_chosen_streaming_wer(run_dir):
    assert [p.name for p in best_checkpoints(run_dir, RankBy("general_dev", 1120), 2)] == [
        "step000200.ckpt",
        "step000300.ckpt",
    ]
    # every step ties at 80 ms: the later one wins
    assert best_checkpoints(run_dir, RankBy("general_dev", 80), 1)[0].name == "step000300.ckpt"
    with pytest.raises(UsageError, match="rank_by.set=target_dev"):
        best_checkpoints(run_dir, RankBy("target_dev", 1120), 1)
    with pytest.raises(UsageError, match="rank_by.lookahead_ms=560"):
        best_checkpoints(run_dir, RankBy("general_dev", 560), 1)


def test_nemo_round_trip_carries_default_lookahead_and_decoding(run_dir, demo_workdir, tmp_path):
    dev_cuts = demo_workdir / "data/prepared/demo_general/dev/cuts.jsonl.gz"
    dev = load_eval_set("general_dev", dev_cuts, 3)
    checkpoint = average_checkpoints(last_checkpoints(run_dir, 2), run_dir / "averaged" / "last2.ckpt")
    output = tmp_path / "model.nemo"
    chosen = ["nemo.default_lookahead=[70,1]", "+nemo.decoding.greedy.max_symbols=5", "check.max_utterances=3"]
    paths = [f"run_dir={run_dir}", f"checkpoint={checkpoint}", f"nemo.output={output}", f"check.data={dev_cuts}"]
    run(compose_config(CONF, "export", [*paths, *chosen]))
    assert [p.name for p in tmp_path.iterdir()] == ["model.nemo"]  # written under a temporary name, then renamed
    restored = ASRModel.restore_from(str(output), map_location="cpu").eval()
    assert list(restored.encoder.att_context_size) == [70, 1]
    assert restored.cfg.decoding.greedy.max_symbols == 5
    source = load_model(str(checkpoint))
    source.change_decoding_strategy(restored.cfg.decoding, decoder_type="rnnt", verbose=False)
    assert streaming_tokens(restored, dev.audios) == streaming_tokens(source, dev.audios)
    assert len(restored.encoder.att_context_size_all) == 4
    assert ranking_line(run_dir) == ["Exported `last2.ckpt`: no WER ranking chose it.", ""]


def test_the_record_and_the_card_say_which_wer_chose_the_best_checkpoint(run_dir, demo_workdir, tmp_path):
    dev_cuts = demo_workdir / "data/prepared/demo_general/dev/cuts.jsonl.gz"
    chosen = ["checkpoint=best", "rank_by.set=general_dev", "rank_by.lookahead_ms=1120", "rank_by.metric=wer"]
    paths = [f"run_dir={run_dir}", f"nemo.output={tmp_path / 'best.nemo'}", f"check.data={dev_cuts}"]
    written = run(compose_config(CONF, "export", [*paths, *chosen, "check.max_utterances=2"]))
    assert Path(written["checkpoint"]).name == "step000200.ckpt"
    assert written["ranked_by"] == {"set": "general_dev", "lookahead_ms": 1120, "metric": "wer"}
    assert ranking_line(run_dir) == ["Checkpoints ranked by WER as written (`wer`) on `general_dev` at 1120 ms.", ""]


def test_config_mistakes_stop_with_one_line(run_dir, tmp_path):
    def cfg(*overrides):
        return compose_config(CONF, "export", [f"run_dir={run_dir}", *overrides])

    with pytest.raises(UsageError, match=f"run_dir={tmp_path}: no {RUN_CONFIG}"):
        run(compose_config(CONF, "export", [f"run_dir={tmp_path}"]))
    with pytest.raises(UsageError, match="checkpoint=step000007: not found"):
        run(cfg("checkpoint=step000007"))
    with pytest.raises(UsageError, match="average.select=first"):
        run(cfg("average.select=first"))
    with pytest.raises(UsageError, match="checkpoint=averaged:? needs"):
        run(cfg("checkpoint=averaged"))
    assert resolve_checkpoint(run_dir, "step000100").name == "step000100.ckpt"


def test_results_card_lists_the_blend_weights_the_run_trained_with(demo_workdir):
    from recipes.export.card import data_section

    prepared = demo_workdir / "data/prepared"
    run = OmegaConf.create(
        {
            "data": {
                "blend_dir": str(prepared / "blends/demo_replay"),
                "prepared_dir": str(prepared),
                "blend_weights": {"demo_target": 0.25, "demo_general": 0.75},
            }
        }
    )
    reweighted = "\n".join(data_section(run))
    assert "re-weighted by `data.blend_weights`" in reweighted and "| demo_general | 0.75 |" in reweighted
    run.data.blend_weights = None
    assert "| demo_general | 0.2 |" in "\n".join(data_section(run))  # as blended
