"""Every .nemo the repository writes works with NeMo's own inference: ``ASRModel.restore_from(x).transcribe([...])``
gives the text of the repository's own offline pass, and NeMo's documented offline flow (``transcribe_speech``:
``model_path=``, ``audio_dir=``, an output manifest) runs on it. The 0.6B stand-in's files: tests/test_standin.py."""

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from nemo.collections.asr.models import ASRModel
from omegaconf import OmegaConf

from recipes.config import CONF, compose_config
from recipes.export.pipeline import run as export
from recipes.interpolate.wise import run as interpolate
from recipes.streaming.engine import StreamingRecognizer
from tests.support.models import BASE_MODEL
from tests.support.runs import checkpointed_run

DATASETS = ("train_ds", "validation_ds", "test_ds")


@pytest.fixture(scope="module")
def audio_dir(demo_workdir, tmp_path_factory):
    """Two single-utterance recordings of the demo's general dev split."""
    out = tmp_path_factory.mktemp("audio")
    recordings = sorted((demo_workdir / "data/demo_corpus/general/audio/dev").glob("dev_0*.wav"))[:2]
    for path in recordings:
        shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def run_dir(demo_workdir, tmp_path_factory):
    """A fine-tuning run of the demo base model as export reads one: its config and two checkpoints."""
    run = tmp_path_factory.mktemp("run")
    checkpointed_run(demo_workdir, run, steps=(1, 2), max_utterances=2)
    return run


@pytest.fixture(scope="module")
def written(run_dir, demo_workdir):
    """{what: .nemo path} for every kind of .nemo the repository writes."""
    check = [f"check.data={demo_workdir / 'data/prepared/demo_general/dev/cuts.jsonl.gz'}", "check.max_utterances=2"]
    files = {"demo base": BASE_MODEL}
    last = ["checkpoint=step000002", f"nemo.output={run_dir / 'last.nemo'}"]
    export(compose_config(CONF, "export", [f"run_dir={run_dir}", *last, *check]))
    files["export of a checkpoint"] = run_dir / "last.nemo"
    averaged = ["average.select=last", "checkpoint=averaged", f"nemo.output={run_dir / 'averaged.nemo'}"]
    export(compose_config(CONF, "export", [f"run_dir={run_dir}", *averaged, *check]))
    files["export of an average"] = run_dir / "averaged.nemo"
    prepared = demo_workdir / "data/prepared"
    sets = f"{{target_dev: {prepared}/demo_target/dev/cuts.jsonl.gz, general_dev: {prepared}/demo_general/dev/cuts.jsonl.gz}}"
    interpolate(
        compose_config(
            CONF,
            "interpolate",
            [
                f"base={BASE_MODEL}",
                f"finetuned={run_dir / 'checkpoints/step000002.ckpt'}",
                f"sets={sets}",
                "alphas=[0.5]",
                "alpha=0.5",
                "lookaheads=[[70,13]]",
                "max_utterances=2",
                f"output_dir={run_dir / 'interpolation'}",
            ],
        )
    )
    files["WiSE-FT interpolation"] = run_dir / "interpolation/model.nemo"
    return files


def offline_texts(model, paths: list[Path]) -> list[str]:
    audios = [sf.read(path, dtype="float32")[0] for path in paths]
    return StreamingRecognizer(model).offline(audios, model.encoder.att_context_size).texts


def texts_of(hypotheses) -> list[str]:
    return [h.text if hasattr(h, "text") else h for h in hypotheses]


def test_every_nemo_transcribes_with_nemo_as_the_repository_decodes_it(written, audio_dir, run_dir):
    paths = sorted(audio_dir.glob("*.wav"))
    for what, nemo in written.items():
        config = yaml.safe_load(_member(nemo, "model_config.yaml"))
        assert all(config[key]["manifest_filepath"] is None for key in DATASETS), what
        assert str(run_dir) not in json.dumps(config) and "prepared" not in json.dumps(config), what
        model = ASRModel.restore_from(str(nemo), map_location="cpu").eval()
        got = texts_of(model.transcribe([str(p) for p in paths], batch_size=2, verbose=False))
        assert got == offline_texts(model, paths), what


def test_nemo_transcribe_speech_flow_writes_the_output_manifest(written, audio_dir, tmp_path):
    """The steps of NeMo's examples/asr/transcribe_speech.py (not shipped in the package) through the package's own
    ``transcribe_utils``: model from ``model_path``, files from ``audio_dir``, hypotheses into ``output_filename``."""
    from nemo.collections.asr.parts.utils import transcribe_utils

    cfg = OmegaConf.create(
        {
            "model_path": str(written["export of an average"]),
            "pretrained_name": None,
            "audio_dir": str(audio_dir),
            "audio_type": "wav",
            "dataset_manifest": None,
            "append_pred": False,
            "pred_name_postfix": None,
            "output_filename": str(tmp_path / "transcripts.jsonl"),
            "batch_size": 2,
            "decoding": {"beam": {"return_best_hypothesis": True}},
        }
    )
    model, name = transcribe_utils.setup_model(cfg, torch.device("cpu"))
    filepaths, _ = transcribe_utils.prepare_audio_data(cfg)
    cfg = transcribe_utils.compute_output_filename(cfg, name)
    hypotheses = model.eval().transcribe(filepaths, batch_size=cfg.batch_size, verbose=False)
    output, key = transcribe_utils.write_transcription(hypotheses, cfg, name, filepaths=filepaths)
    rows = [json.loads(line) for line in Path(output).read_text().splitlines()]
    assert [r["audio_filepath"] for r in rows] == filepaths and len(rows) == 2
    assert [r[key] for r in rows] == offline_texts(model, [Path(p) for p in filepaths])


def _member(nemo: Path, name: str) -> bytes:
    import tarfile

    with tarfile.open(nemo) as tar:
        return tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(name))).read()
