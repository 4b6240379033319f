"""Fine-tuning controls (freezing, per-module learning rates, L2-SP, replay share), the base row of a run's report,
and WiSE-FT interpolation, on the committed demo base model and the small test corpus."""

import json

import pytest
import torch
from nemo.collections.asr.models import ASRModel
from omegaconf import OmegaConf

from recipes.config import CONF, compose_config
from recipes.errors import UsageError
from recipes.evaluate.sets import load_eval_set
from recipes.finetune.model import build_model
from recipes.finetune.train import train
from recipes.interpolate.wise import check_compatible, interpolate
from recipes.interpolate.wise import run as run_interpolation
from recipes.streaming.engine import StreamingRecognizer
from tests.support.models import BASE_MODEL

LR = 2e-3
FAST = [
    f"model.init_from={BASE_MODEL}",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=0",
    "data.train_ds.batch_duration=12",
    "logger=none",
    "~callbacks.lr_monitor",
    f"model.optim.lr={LR}",
    "callbacks.checkpoint.eval_sets={}",
]


def fine_tune(workdir, run_name, *overrides):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        return train(
            compose_config(CONF, "finetune", ["experiment=demo_finetune", f"run_name={run_name}", *FAST, *overrides])
        )


@pytest.fixture(scope="module")
def base_weights():
    model = ASRModel.restore_from(str(BASE_MODEL), map_location=torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(model, base_weights, prefix):
    return [k for k, v in model.state_dict().items() if k.startswith(prefix) and not torch.equal(v, base_weights[k])]


def test_frozen_modules_keep_their_weights_and_module_lrs_reach_the_optimizer(demo_workdir, base_weights):
    trainer = fine_tune(
        demo_workdir,
        "frozen",
        "adapt.freeze.encoder_layers=2",
        "adapt.freeze.decoder=true",
        "adapt.lr.encoder=1e-3",
        "adapt.lr.joint=5e-3",
        "adapt.layer_decay=0.5",
    )
    model = trainer.lightning_module
    for frozen in ("encoder.pre_encode.", "encoder.layers.0.", "encoder.layers.1.", "decoder."):
        assert not changed(model, base_weights, frozen), frozen
    for trained in ("encoder.layers.2.", "encoder.layers.3.", "joint."):
        assert changed(model, base_weights, trained), trained
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    assert set(groups) == {"encoder.layers.2", "encoder.layers.3", "joint", "other"}  # other: the CTC head
    initial = {name: g["initial_lr"] for name, g in groups.items()}  # set by the scheduler from each group's lr
    assert initial == pytest.approx({"encoder.layers.3": 1e-3, "encoder.layers.2": 5e-4, "joint": 5e-3, "other": LR})
    assert {id(p) for g in groups.values() for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }


def test_l2sp_at_full_strength_keeps_the_base_weights_and_off_it_does_not(demo_workdir, base_weights):
    # Constant schedule: lr * l2sp = 1 at every step, so each step ends exactly on the base weights.
    pulled = fine_tune(demo_workdir, "l2sp", "~model.optim.sched", f"adapt.l2sp={1 / LR}").lightning_module
    assert not changed(pulled, base_weights, "")
    free = fine_tune(demo_workdir, "no_l2sp", "~model.optim.sched", "adapt.l2sp=0").lightning_module
    assert changed(free, base_weights, "encoder.") and changed(free, base_weights, "decoder.")


def test_replay_share_reweights_the_blend_without_data_prep(demo_workdir):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        cfg = compose_config(
            CONF, "finetune", ["experiment=demo_finetune", "data.blend_weights={demo_target: 0.5, demo_general: 0.5}"]
        )
        entries = OmegaConf.to_container(cfg.data.train_ds.input_cfg, resolve=True)
        assert {e["tags"]["corpus"]: e["weight"] for e in entries} == {"demo_target": 0.5, "demo_general": 0.5}
        as_blended = compose_config(
            CONF, "finetune", ["experiment=demo_finetune", "data.blend_weights=null"]
        ).data.train_ds.input_cfg
        assert as_blended.endswith("blends/demo_replay/input_cfg.yaml")
        with pytest.raises(Exception, match="demo_nowhere"):
            _ = compose_config(
                CONF, "finetune", ["experiment=demo_finetune", "data.blend_weights={demo_nowhere: 1}"]
            ).data.train_ds.input_cfg


@pytest.fixture(scope="module")
def finetuned(demo_workdir):
    """Two steps at a high learning rate, streaming-evaluated at one lookahead: far enough from the base that
    their tokens differ."""
    trainer = fine_tune(
        demo_workdir,
        "moved",
        "model.optim.lr=2e-2",
        "~model.optim.sched",
        "callbacks.checkpoint.max_utterances=3",
        "callbacks.checkpoint.lookaheads=[[70,13]]",
        "callbacks.checkpoint.eval_sets=${data.dev_sets}",
        "callbacks.checkpoint.long_form_sets=null",
    )
    return demo_workdir / "exp" / "moved" / "checkpoints", trainer.lightning_module


def test_run_report_has_the_base_row_and_the_change_against_it(finetuned):
    checkpoints, _ = finetuned
    base = json.loads((checkpoints / "base.stream_wer.json").read_text())
    assert base["base"] and base["step"] == 0 and set(base["sets"]) == {"target_dev", "general_dev"}
    table = (checkpoints / "stream_wer.md").read_text()
    assert "| base (before training) |" in table and "| step 2 (step000002.ckpt) |" in table
    assert "## Change vs base at step 2" in table and "| general_dev | 1120ms |" in table


def test_interpolation_ends_reproduce_base_and_finetuned_tokens(demo_workdir, finetuned):
    _, model = finetuned
    base = ASRModel.restore_from(str(BASE_MODEL), map_location=torch.device("cpu")).eval()
    model = model.eval()
    dev = load_eval_set("target_dev", demo_workdir / "data/prepared/demo_target/dev/cuts.jsonl.gz", 4)
    tokens = {
        name: StreamingRecognizer(m, 4).stream(dev.audios, [70, 1]).tokens
        for name, m in (("base", base), ("finetuned", model))
    }
    assert tokens["base"] != tokens["finetuned"], "precondition: the two ends must differ"
    base_sd, ft_sd = base.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}
    for alpha, expected in ((0.0, "base"), (1.0, "finetuned")):
        model.load_state_dict(interpolate(base_sd, ft_sd, alpha))
        assert StreamingRecognizer(model, 4).stream(dev.audios, [70, 1]).tokens == tokens[expected]
    model.load_state_dict(ft_sd)


def test_interpolate_writes_the_front_and_exports_the_chosen_alpha(demo_workdir, finetuned):
    checkpoints, _ = finetuned
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        cfg = compose_config(
            CONF,
            "interpolate",
            [
                f"base={BASE_MODEL}",
                f"finetuned={checkpoints / 'last.ckpt'}",
                "alphas=[0.5]",
                "max_utterances=3",
                "lookaheads=[[70,13]]",
                "alpha=0.5",
                "output_dir=exp/wise",
            ],
        )
        assert run_interpolation(cfg) == 0.5
    out = demo_workdir / "exp" / "wise"
    table = (out / "interpolation.md").read_text()
    assert "| 0 (base) |" in table and "| 0.5 **chosen** |" in table and "| 1 (fine-tuned) |" in table
    assert (out / "interpolation.png").stat().st_size > 0
    report = json.loads((out / "interpolation.json").read_text())
    assert set(report["alphas"]) == {"0.0", "0.5", "1.0"} and report["chosen_alpha"] == 0.5
    exported = ASRModel.restore_from(str(out / "model.nemo"), map_location=torch.device("cpu"))
    base = ASRModel.restore_from(str(BASE_MODEL), map_location=torch.device("cpu"))
    ft = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    key = "joint.joint_net.2.weight"
    assert torch.allclose(exported.state_dict()[key], (base.state_dict()[key] + ft[key]) / 2)


def test_interpolating_another_architecture_is_one_clear_error(demo_workdir):
    base = ASRModel.restore_from(str(BASE_MODEL), map_location=torch.device("cpu"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)  # a from-scratch model with the test corpus's 64-piece tokenizer
        cfg = compose_config(CONF, "finetune", ["experiment=demo_pretrain"])
        other = build_model(cfg.model)
    with pytest.raises(UsageError, match=r"^finetuned=other.nemo cannot be interpolated with base=base.nemo: "):
        check_compatible(base, other, "base.nemo", "other.nemo")
