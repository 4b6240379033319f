"""The released model's first contact, on its stand-in: every stage of the recipe on a model of the release's shapes.

``python -m scripts.make_standin`` builds the stand-in (618,084,865 parameters, the release's loss and decoding, a
1024-piece PnC tokenizer, random weights); then the command sequence of README.md ("Your data, the real model")
runs on it with small data and few steps: data prep of a punctuated, capitalised corpus with the stand-in as
tokenizer, fine-tuning with all four lookaheads (memory pre-flight on, AdamW, checkpoints streamed at every
lookahead, retention, last.ckpt), averaging of two checkpoints into the checked ``.nemo`` with an ONNX export at one
lookahead (fp32 with one external data file, and int8) checked token for token with onnxruntime and decoded by
sherpa-onnx, a streaming evaluation, the results card.
Each stage is its own process; its wall time and peak RSS are printed at the end (docs/real_model.md records them):

    python -m pytest -m standin tests/test_standin.py -s

About 11 GiB of memory at peak and 25 GB of disk (in the pytest temp dir, or ``$STANDIN_WORKDIR`` when set, which
then keeps the run, and the stand-in cache).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from recipes.config import REPO
from scripts.make_standin import NAME, RECORD, default_dir
from tests.support.runs import subprocess_env

pytestmark = pytest.mark.standin

PARAMETERS = 618_084_865  # the release's count (public ports), with its 1024-piece vocabulary
LOOKAHEADS = ("1120ms", "560ms", "160ms", "80ms")
STAGE_TIMEOUT = 3600  # s, per stage: a hang, not a busy machine
SIZES = [  # a small PnC corpus: enough for a few 4-second batches and 2 dev utterances per domain
    "domains.general.train=8",
    "domains.general.dev=2",
    "domains.target.train=12",
    "domains.target.dev=2",
]


@dataclass
class Stage:
    name: str
    command: str
    seconds: float
    cpu_seconds: float  # user + system: what the stage costs whatever else the machine runs
    peak_rss_gib: float


class Pipeline:
    """Runs the stages in ``workdir``, one process each, measuring wall time and peak RSS (``wait4``'s rusage)."""

    def __init__(self, workdir: Path):
        self.workdir, self.stages, self.logs = workdir, [], {}

    def run(self, key: str, name: str, module: str, *args: str) -> str:
        """Stage ``name`` (its log: ``self.logs[key]``): ``python -m module args``; fails the test unless it exits 0."""
        log_path = self.logs[key] = self.workdir / "logs" / f"{key}.log"
        log_path.parent.mkdir(exist_ok=True)
        env = subprocess_env(PYTHONPATH=str(REPO), WANDB_SILENT="true", HF_HUB_OFFLINE="1")
        start = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            status, usage = self._wait(proc, start)
        output = log_path.read_text()
        assert status == 0, f"{name}: exit {status}\n{output[-6000:]}"
        command = " ".join(["python -m", module, *args])
        cpu = usage.ru_utime + usage.ru_stime
        self.stages.append(Stage(name, command, time.monotonic() - start, cpu, usage.ru_maxrss / 2**20))
        (self.workdir / "stages.md").write_text(self.table() + "\n")
        return output

    @staticmethod
    def _wait(proc: subprocess.Popen, start: float):
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                return proc.returncode, usage
            if time.monotonic() - start > STAGE_TIMEOUT:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"stage did not finish within {STAGE_TIMEOUT} s: {proc.args}")
            time.sleep(0.5)

    def table(self) -> str:
        lines = ["| stage | wall time | CPU time | peak RSS |", "|---|---:|---:|---:|"]
        lines += [
            f"| {s.name} | {s.seconds:.0f} s | {s.cpu_seconds:.0f} s | {s.peak_rss_gib:.1f} GiB |" for s in self.stages
        ]
        total = sum(s.cpu_seconds for s in self.stages)
        return "\n".join([*lines, f"| all stages | {sum(s.seconds for s in self.stages):.0f} s | {total:.0f} s | |"])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole sequence, run once; the tests below check what it left."""
    workdir = Path(os.environ.get("STANDIN_WORKDIR") or tmp_path_factory.mktemp("standin"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Pipeline(workdir)
    standin = default_dir() / NAME
    run.run("standin", "stand-in (built, or found up to date)", "scripts.make_standin")
    run.run("corpus", "demo corpus, PnC (24 utterances)", "data_prep.demo_corpus", "text_style=pnc", "seed=5", *SIZES)
    for corpus in ("demo_target", "demo_general"):
        run.run(corpus, f"data prep {corpus}", "data_prep", f"corpus={corpus}", f"tokenizer={standin}", *PREPARE)
    run.run("blend", "blend", "data_prep.blend", "blend=demo_replay", "num_buckets=2")
    run.run("finetune", "fine-tune: 2 steps, 3 streaming evaluations", "recipes.finetune", *finetune_args(standin))
    run.run("export", "export: average of 2, checked .nemo, ONNX 1120 ms, parity", "recipes.export", *EXPORT)
    run.run("evaluate", "streaming evaluation of model.nemo", "recipes.evaluate", *EVALUATE)
    run.run("card", "results card", "recipes.export.card", *CARD)
    table = run.table()
    (workdir / "stages.md").write_text(f"{table}\n\n{sizes_table(workdir)}\n")
    print(f"\n{workdir}\n{table}\n\n{sizes_table(workdir)}")
    return run


PREPARE = ["text.policy=pnc", "~long_form", "progress=false"]  # keep punctuation and case; no long-form streams
RUN = "exp/standin"
# The streamed dev set: every 0.6B chunk step reads its 2.3 GiB of weights, so a streaming evaluation costs the
# longest utterance's number of chunks, whatever the batch: the general dev set's 1.6-second utterances, one of them.
DEV = "{general_dev: data/prepared/demo_general/dev/cuts.jsonl.gz}"


def finetune_args(standin: Path) -> list[str]:
    return [
        "model=nemotron_streaming_0.6b",
        f"model.init_from={standin}",
        "run_name=standin",
        "callbacks.checkpoint.keep_last=2",
        "callbacks.checkpoint.keep_best=2",
        # small: one 4-second utterance per step, a checkpoint after each, one 1.6-second dev utterance streamed
        "trainer.max_steps=2",
        "trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "data.train_ds.batch_duration=4",
        "data.train_ds.max_duration=4",
        "data.long_form_sets=null",
        "~data.dev_sets.target_dev",
        "callbacks.checkpoint.max_utterances=1",
    ]


EXPORT = [
    f"run_dir={RUN}",
    "average.select=last",
    "average.num=2",
    "checkpoint=averaged",
    f"onnx.output_dir={RUN}/onnx",
    "onnx.lookaheads=[[70,13]]",
    "check.max_utterances=1",
]
EVALUATE = [f"model={RUN}/model.nemo", f"data={DEV}", "max_utterances=1", f"output={RUN}/model_wer.json"]
CARD = [
    f"run_dir={RUN}",
    f"base_report={RUN}/checkpoints/base.stream_wer.json",
    f"exported_report={RUN}/model_wer.json",
]


def sizes_table(workdir: Path) -> str:
    run = workdir / RUN
    files = [
        *sorted((run / "checkpoints").glob("*.ckpt")),
        *sorted((run / "averaged").glob("*.ckpt")),
        run / "model.nemo",
        *sorted((run / "onnx").rglob("*.onnx*")),
    ]
    lines = ["| file | size |", "|---|---:|"]
    return "\n".join(lines + [f"| {p.relative_to(run)} | {p.stat().st_size / 2**30:.2f} GiB |" for p in files])


def nemo_config(path: Path) -> dict:
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_config.yaml"))
        return yaml.safe_load(tar.extractfile(member))


def test_standin_has_the_release_shapes_loss_and_decoding(pipeline):
    record = json.loads((default_dir() / RECORD).read_text())
    assert record["parameters"] == PARAMETERS
    assert f"{PARAMETERS:,} parameters" in pipeline.logs["standin"].read_text()
    config = nemo_config(default_dir() / NAME)
    assert config["target"].endswith("EncDecRNNTBPEModel")
    assert config["loss"] == {
        "loss_name": "default",
        "warprnnt_numba_kwargs": {"fastemit_lambda": 0.005, "clamp": -1.0},
    }
    assert config["decoding"] == {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}}
    assert config["encoder"]["use_bias"] is False and config["encoder"]["xscaling"] is False
    assert config["validation_ds"]["manifest_filepath"] is None


def test_pnc_corpus_is_prepared_with_the_standin_tokenizer(pipeline):
    summary = json.loads((pipeline.workdir / "data/prepared/demo_target/summary.json").read_text())
    dev = (pipeline.workdir / "data/demo_corpus/target/dev.jsonl").read_text()
    assert any(c.isupper() for c in dev) and any(c in dev for c in ",.?!")
    train = summary["splits"]["train"]
    assert train["rows"]["kept"] > 0 and "tokenizer_unk" not in train.get("rejected_by_reason", {})


def test_finetune_keeps_fastemit_streams_every_lookahead_and_prunes_checkpoints(pipeline):
    log = pipeline.logs["finetune"].read_text()
    assert "| `loss.fastemit_lambda` | `0.005` | checkpoint |" in log
    assert "Memory pre-flight" in log
    checkpoints = pipeline.workdir / RUN / "checkpoints"
    reports = {p.name: json.loads(p.read_text()) for p in checkpoints.glob("step*.stream_wer.json")}
    assert sorted(reports) == ["step000001.ckpt.stream_wer.json", "step000002.ckpt.stream_wer.json"]
    for report in [*reports.values(), json.loads((checkpoints / "base.stream_wer.json").read_text())]:
        assert tuple(report["sets"]["general_dev"]) == LOOKAHEADS
    kept = sorted(p.name for p in checkpoints.glob("step*.ckpt"))
    assert kept == ["step000001.ckpt", "step000002.ckpt"]  # keep_last=2 (pruning itself: tests/test_retention.py)
    for path in kept:  # weights only; the optimizer's state is in last.ckpt alone
        assert "optimizer_states" not in torch.load(checkpoints / path, mmap=True, weights_only=False)
    assert torch.load(checkpoints / "last.ckpt", mmap=True, weights_only=False)["optimizer_states"]


def test_onnx_export_over_2gib_has_one_data_file_exact_tokens_and_sherpa_decodes_it(pipeline):
    onnx = pipeline.workdir / RUN / "onnx"
    assert sorted(p.name for p in (onnx / "1120ms").iterdir()) == [
        "encoder.int8.onnx",
        "encoder.onnx",
        "encoder.onnx.data",
    ]
    assert (onnx / "1120ms/encoder.onnx.data").stat().st_size > 2**31
    parity = json.loads((onnx / "parity.json").read_text())
    for by_lookahead in parity.values():
        entry = by_lookahead["1120ms"]
        assert entry["token_mismatches"] == 0
        assert {"pytorch", "onnxruntime", "sherpa", "sherpa_int8"} <= entry.keys()


def test_results_card_lists_what_the_model_trained_with(pipeline):
    card = (pipeline.workdir / RUN / "RESULTS.md").read_text()
    assert "## Trained with" in card and "| `loss.fastemit_lambda` | `0.005` | checkpoint |" in card
    assert "## ONNX runtimes" in card


def test_nemo_transcribe_gives_the_repository_offline_text(pipeline):
    """NeMo's own ``transcribe`` on the stand-in and on the exported ``.nemo`` (0.6B, restored in this process)."""
    from nemo.collections.asr.models import ASRModel

    from recipes.streaming.engine import StreamingRecognizer

    audio = sorted((pipeline.workdir / "data/demo_corpus/general/audio/dev").glob("dev_0*.wav"))[:2]
    assert len(audio) == 2
    for nemo in (default_dir() / NAME, pipeline.workdir / RUN / "model.nemo"):
        model = ASRModel.restore_from(str(nemo), map_location="cpu").eval()
        hypotheses = model.transcribe([str(p) for p in audio], batch_size=2, verbose=False)
        waveforms = [sf.read(p, dtype="float32")[0] for p in audio]
        expected = StreamingRecognizer(model).offline(waveforms, model.encoder.att_context_size).texts
        assert [h.text if hasattr(h, "text") else h for h in hypotheses] == expected, nemo
        del model
