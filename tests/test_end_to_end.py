"""data -> pre-train -> checkpoint -> streaming evaluation -> export -> restore -> fine-tune -> resume, on CPU."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tbparse import SummaryReader

from recipes.config import CONF, compose_config
from recipes.evaluate.sets import load_eval_set
from recipes.export.pipeline import run as export
from recipes.finetune.loss import VectorizedRNNTLoss
from recipes.finetune.train import train
from recipes.model_files import load_model
from recipes.streaming.engine import StreamingRecognizer

LOOKAHEAD_KEYS = {"1120ms", "560ms", "160ms", "80ms"}
EVAL_UTTERANCES = 4
SMALL = [
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
    "data.train_ds.batch_duration=12",
    f"callbacks.checkpoint.max_utterances={EVAL_UTTERANCES}",
    "callbacks.checkpoint.batch_size=8",
]


def assert_streaming_reports(run_dir: Path, steps: list[int]):
    for step in steps:
        report = json.loads((run_dir / "checkpoints" / f"step{step:06d}.ckpt.stream_wer.json").read_text())
        assert report["step"] == step
        assert {"target_dev", "general_dev"} <= set(report["sets"])  # beside the continuous (long-form) sets
        for by_lookahead in (report["sets"][name] for name in ("target_dev", "general_dev")):
            assert set(by_lookahead) == LOOKAHEAD_KEYS
            for entry in by_lookahead.values():
                assert len(entry["utterances"]) == EVAL_UTTERANCES
                assert all(u["ref"] for u in entry["utterances"])
                assert 0.0 <= entry["wer_normalized"] and 0.0 <= entry["wer"]
                assert entry["rtf"] > 0


@pytest.fixture(scope="module")
def pretrained(demo_workdir):
    """The demo's pre-training stage, shrunk to 6 steps: from scratch, two checkpoints, then export."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        cfg = compose_config(CONF, "finetune", ["experiment=demo_pretrain", "trainer.max_steps=6", *SMALL])
        trainer = train(cfg)
        export_cfg = compose_config(CONF, "export", ["run_dir=exp/demo_pretrain", "nemo.output=models/base.nemo"])
        nemo = export(export_cfg)["nemo"]
    return demo_workdir, trainer, nemo


def test_pretraining_checkpoints_carry_streaming_wer_for_every_set_and_lookahead(pretrained):
    workdir, trainer, _ = pretrained
    run_dir = workdir / "exp" / "demo_pretrain"
    assert trainer.global_step == 6
    assert isinstance(trainer.lightning_module.loss._loss, VectorizedRNNTLoss), "rnnt_loss=auto on CPU"
    assert {p.name for p in (run_dir / "checkpoints").glob("*.ckpt")} == {
        "step000003.ckpt",
        "step000006.ckpt",
        "last.ckpt",
    }
    assert_streaming_reports(run_dir, [3, 6])
    assert "step000006" in (run_dir / "checkpoints" / "stream_wer.md").read_text()
    assert (run_dir / "checkpoints" / "stream_wer.png").stat().st_size > 0
    scalars = SummaryReader(str(run_dir / "tensorboard")).scalars
    logged = scalars[scalars.tag.str.startswith("stream_wer/")]
    run = OmegaConf.load(run_dir / "run_config.yaml").callbacks.checkpoint
    sets = {*run.eval_sets, *run.long_form_sets}
    assert {"target_dev", "general_dev", "target_1min", "general_1min"} <= sets
    assert set(logged.tag) == {f"stream_wer/{s}/{k}" for s in sets for k in LOOKAHEAD_KEYS}
    assert sorted(set(logged.step)) == [3, 6]
    eval_seconds = scalars[scalars.tag == "stream_eval_seconds"]
    assert sorted(eval_seconds.step) == [3, 6] and (eval_seconds.value > 0).all()
    per_lookahead_val = set(scalars[scalars.tag.str.startswith("val_wer/")].tag)
    assert per_lookahead_val == {f"val_wer/{k}" for k in LOOKAHEAD_KEYS}
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb should log offline inside the run directory"


def test_exported_nemo_restores_and_transcribes_like_the_checkpoint(pretrained):
    from nemo.collections.asr.models import ASRModel

    workdir, _, nemo = pretrained
    restored = ASRModel.restore_from(str(nemo), map_location=torch.device("cpu"))
    from_ckpt = load_model(str(workdir / "exp" / "demo_pretrain" / "checkpoints" / "last.ckpt"))
    dev = load_eval_set("target_dev", workdir / "data/prepared/demo_target/dev/cuts.jsonl.gz")
    for att_context_size in ([70, 13], [70, 0]):
        ours = StreamingRecognizer(restored, batch_size=4).stream(dev.audios, att_context_size)
        theirs = StreamingRecognizer(from_ckpt, batch_size=4).stream(dev.audios, att_context_size)
        assert ours.tokens == theirs.tokens


def test_finetune_from_nemo_with_lookahead_weights_then_resume(pretrained):
    workdir, _, nemo = pretrained
    overrides = [
        "experiment=demo_finetune",
        f"model.init_from={nemo}",
        "model.att_context_probs=[0.4,0.2,0.2,0.2]",
        *SMALL,
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        first = train(compose_config(CONF, "finetune", [*overrides, "trainer.max_steps=3"]))
        encoder = first.lightning_module.encoder
        assert encoder.att_context_probs == pytest.approx([0.4, 0.2, 0.2, 0.2])
        assert sum(encoder.att_context_probs) == 1.0
        run_dir = workdir / "exp" / "demo_finetune"
        wandb_id = (run_dir / "wandb_run_id").read_text()
        # A preempted job re-run with the same command continues from last.ckpt, in the same run.
        resumed = train(compose_config(CONF, "finetune", [*overrides, "trainer.max_steps=6"]))
    assert resumed.global_step == 6
    assert (run_dir / "wandb_run_id").read_text() == wandb_id
    recorded = OmegaConf.load(run_dir / "run_config.yaml").init_from_file
    assert recorded.path == str(Path(nemo).resolve())
    assert recorded.sha256 == hashlib.sha256(Path(nemo).read_bytes()).hexdigest()
    assert_streaming_reports(run_dir, [3, 6])
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) >= 1
