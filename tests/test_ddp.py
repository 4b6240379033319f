"""DDP on CPU: a real 2-process fine-tune (gloo), stopped by a signal to one rank and resumed, that finishes with
one streaming evaluation per checkpoint split across the ranks and gathered; and each rank reading its own batches."""

import json
import signal
from pathlib import Path

import pytest
import torch
from lhotse import CutSet
from omegaconf import OmegaConf
from tbparse import SummaryReader

from recipes.config import CONF, compose_config
from recipes.errors import EXIT_PREEMPTED
from recipes.finetune.train import train_data_config
from tests.support.models import BASE_MODEL

DDP = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "trainer.max_steps=4",
    "trainer.limit_train_batches=4",
    "trainer.accumulate_grad_batches=2",
    "callbacks.checkpoint.max_utterances=5",
]  # 5 target-dev utterances: 3 on rank 0, 2 on rank 1
TIMEOUT = 900


@pytest.mark.slow
def test_ddp_finetune_finishes_with_one_gathered_streaming_evaluation_per_checkpoint(demo_workdir, training_runs):
    # A one-utterance dev set: rank 1 gets none of it and must still take part in every collective.
    target_dev = demo_workdir / "data/prepared/demo_target/dev/cuts.jsonl.gz"
    single = demo_workdir / "data/single_dev.jsonl.gz"
    CutSet.from_file(target_dev).subset(first=1).to_file(single)
    sets = {"target_dev": target_dev, "single": single}
    eval_sets = "{" + ", ".join(f"{name}: {path}" for name, path in sets.items()) + "}"
    overrides = [*DDP, f"callbacks.checkpoint.eval_sets={eval_sets}"]
    # SIGUSR1 to rank 0 only, after the first checkpoint: both ranks stop at the same step, exit 75 ...
    run = training_runs(demo_workdir, "ddp", overrides)
    checkpoints = run.run_dir / "checkpoints"
    run.wait_for(checkpoints / "step000002.ckpt", TIMEOUT)
    run.signal(signal.SIGUSR1)
    assert run.wait(TIMEOUT) == EXIT_PREEMPTED, run.log_tail()
    assert "another rank's signal" in run.log_tail(100_000), "rank 1 stopped because rank 0 was signalled"
    # ... and the same command resumes and finishes.
    run = training_runs(demo_workdir, "ddp", overrides)
    assert run.wait(TIMEOUT) == 0, run.log_tail()

    assert {p.name for p in checkpoints.glob("*.ckpt")} == {"step000002.ckpt", "step000004.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4
    scalars = SummaryReader(str(run.run_dir / "tensorboard")).scalars
    # Step 0 is the base model, scored once before training (callbacks.checkpoint.evaluate_base), not on resume.
    assert sorted(scalars[scalars.tag == "stream_eval_seconds"].step) == [0, 2, 4], "one evaluation per checkpoint"
    assert {f"val_wer/{ms}ms" for ms in (80, 160, 560, 1120)} <= set(scalars.tag)

    # The gathered report equals a single-process evaluation of the same checkpoint: all utterances, same WER.
    report = json.loads((checkpoints / "step000004.ckpt.stream_wer.json").read_text())
    single_report = run.run_dir / "single_process_wer.json"
    evaluation = training_runs.run(
        demo_workdir,
        "recipes.evaluate",
        [
            f"model={checkpoints / 'step000004.ckpt'}",
            f"data={eval_sets}",
            "max_utterances=5",
            "batch_size=8",
            f"output={single_report}",
        ],
        run.run_dir / "evaluate.log",
    )
    assert evaluation.wait(TIMEOUT) == 0, evaluation.log_tail()
    single_process = json.loads(single_report.read_text())["sets"]
    for name, expected_count in (("target_dev", 5), ("single", 1)):
        for key, expected in single_process[name].items():
            entry = report["sets"][name][key]
            assert len(entry["utterances"]) == expected_count
            by_id = {u["id"]: u["hyp"] for u in entry["utterances"]}
            assert by_id == {u["id"]: u["hyp"] for u in expected["utterances"]}
            assert entry["wer"] == pytest.approx(expected["wer"])
    # Ranks draw the same lookahead at every step: their Python RNG streams are still equal at the end.
    rng = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["rng_states"]
    assert len(rng) == 2 and rng[0]["python"] == rng[1]["python"]


def test_each_rank_reads_its_own_batches(demo_workdir):
    """With num_workers=0, NeMo's ``shard_seed: randomized`` would give every rank the same Shar stream."""
    from nemo.collections.asr.data.audio_to_text_lhotse import LhotseSpeechToTextBpeDataset
    from nemo.collections.asr.models import ASRModel
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config

    tokenizer = ASRModel.restore_from(str(BASE_MODEL), map_location=torch.device("cpu")).tokenizer

    def first_batch(train_ds, rank):
        loader = get_lhotse_dataloader_from_config(
            OmegaConf.create(OmegaConf.to_container(train_ds, resolve=True)),
            global_rank=rank,
            world_size=2,
            tokenizer=tokenizer,
            dataset=LhotseSpeechToTextBpeDataset(tokenizer=tokenizer),
        )
        return next(iter(loader))[0]

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        train_ds = compose_config(CONF, "finetune", ["experiment=demo_finetune"]).data.train_ds
        assert train_ds.shard_seed == "randomized" and train_ds.num_workers == 0
        as_configured = [first_batch(train_ds, rank) for rank in (0, 1)]
        assert torch.equal(*as_configured), "the problem this guards against: the same batches on every rank"
        ours = [first_batch(train_data_config(train_ds, rank), rank) for rank in (0, 1)]
    assert ours[0].shape != ours[1].shape or not torch.equal(*ours)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_0_6b_bf16_fine_tune_with_streaming_evaluation_then_export(demo_workdir):
    """The full-size architecture (random weights) for a few bf16-mixed steps on one GPU, with the after-checkpoint
    streaming evaluation on, then exported and restored."""
    from nemo.collections.asr.models import ASRModel

    from recipes.export.pipeline import run as export
    from recipes.finetune.train import train

    overrides = [
        "experiment=demo_finetune",
        "model=nemotron_streaming_0.6b",
        "model.init_from=null",
        "model.architecture.tokenizer.dir=data/tokenizers/demo_general",
        "trainer=gpu",
        "trainer.max_steps=3",
        "trainer.limit_train_batches=3",
        "data.train_ds.batch_duration=16",
        "callbacks.checkpoint.max_utterances=4",
        "run_name=gpu_0.6b",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(demo_workdir)
        trainer = train(compose_config(CONF, "finetune", overrides))
        assert trainer.global_step == 3 and trainer.precision == "bf16-mixed"
        report = json.loads(Path("exp/gpu_0.6b/checkpoints/step000003.ckpt.stream_wer.json").read_text())
        assert {len(e["utterances"]) for by_la in report["sets"].values() for e in by_la.values()} == {4}
        nemo = export(compose_config(CONF, "export", ["run_dir=exp/gpu_0.6b"]))["nemo"]
    restored = ASRModel.restore_from(str(nemo), map_location=torch.device("cpu"))
    assert sum(p.numel() for p in restored.parameters()) > 0.5e9
