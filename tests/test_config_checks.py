"""Config and input mistakes stop before compute: one line each (key, value, fix), exit code 2, no traceback.

The checks' messages in full, in-process on the composed demo config (what the command line checks first), and what
the mistake table (tests/test_mistakes.py) does not plant: init checkpoints that cannot stream, truncated files, the
memory pre-flight.
"""

import os
import re
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from recipes.checks import check_evaluate, check_finetune
from recipes.config import CONF, compose_config
from recipes.errors import UsageError
from recipes.finetune.callbacks.memory import fitting_batch_duration
from recipes.model_files import resolve_checkpoint
from tests.support.models import BASE_MODEL, nemo_with
from tests.support.runs import CLI_TIMEOUT, run_cli

EVALUATE_CONFIG = CONF / "evaluate.yaml"


@pytest.fixture(autouse=True)
def in_demo_workdir(demo_workdir, monkeypatch):
    """Run where the demo data lies, as the recipes do: the blend's Shar paths are relative, like NeMo reads them."""
    monkeypatch.chdir(demo_workdir)


def finetune_problems(workdir: Path, *overrides: str) -> list[str]:
    cfg = compose_config(
        CONF,
        "finetune",
        ["experiment=demo_finetune", f"paths.root_dir={workdir}", f"model.init_from={BASE_MODEL}", *overrides],
    )
    try:
        check_finetune(cfg)
    except UsageError as err:
        return str(err).splitlines()
    return []


def truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.att_context_probs=[0.5,0.5]"], "2 weights for 4 lookaheads"),
        (["model.att_context_probs=[0.5,0.5,0.5,-0.5]"], r"\[3\]=-0.5: give a number >= 0"),
        (["model.att_context_probs=[0.4,0.3,0.2,0.2]"], "sum to 1.1, not 1"),
        (
            ["model.att_context_size=[[70,13],[70,5]]"],
            r"\[70,5\]: chunked_limited attention needs left divisible by right "
            r"\+ 1 = 6: use \[66,5\] or \[72,5\]",
        ),
        (
            ["model.att_context_size=[[70,13]]", "model.att_context_probs=null", "model.init_from=/nowhere/model.nemo"],
            "model.init_from=/nowhere/model.nemo: no such file",
        ),
        (
            ["data.blend_dir=/nowhere"],
            "data.train_ds.input_cfg=/nowhere/input_cfg.yaml: not found: make it with python -m data_prep",
        ),
        (["trainer.max_steps=-1"], r"trainer.max_steps=-1: give an integer >= 1 \(Lhotse loaders have no length"),
        (
            ["data.train_ds.batch_duration=-5"],
            r"data.train_ds.batch_duration=-5: give a number > 0 \(seconds of audio per batch\)",
        ),
        (["model.optim.lr=0"], r"model.optim.lr=0: give a number > 0 and <= 1"),
        (["model.optim.lr=3"], r"model.optim.lr=3: give a number > 0 and <= 1"),
        (
            ["model.att_context_size=[[140,13]]", "model.att_context_probs=null"],
            r"\[\[140,13\]\] never trained by .*demo_base.nemo \(trained: \[\[70,13\],\[70,6\],\[70,1\],\[70,0\]\]\).*"
            r"model.allow_new_lookaheads=true",
        ),
        (["trainer.precision=16-mixed"], "float16 mixed precision needs a GPU; on CPU use 32-true"),
        (["trainer.precision=fp8"], "trainer.precision=fp8: not one of .*bf16-mixed"),
        (["trainer.devices=0"], r"trainer.devices=0: give an integer >= 1 or one of auto, -1"),
        (["trainer.num_nodes=2"], "no cluster launcher here"),
        (
            ["data.train_ds.use_bucketing=false"],
            "NeMo turns bucketing back on while data.train_ds.bucket_duration_bins is set",
        ),
        (["logger=none"], r"callbacks.lr_monitor \(Lightning's LearningRateMonitor\) needs a logger"),
        (
            ["model.init_from=nvidia/nemotron-typo"],
            "model.init_from=nvidia/nemotron-typo: not a file, no cached copy at revision main, and no network",
        ),
        (["+data.train_ds.min_duration=30"], r"data.train_ds.min_duration=30: no training cut is left: of \d+ cuts"),
    ],
)
def test_each_config_mistake_is_one_line_naming_key_value_and_fix(demo_workdir, monkeypatch, overrides, message):
    for name in ("SLURM_NNODES", "WORLD_SIZE"):  # num_nodes: as on a login node, no launcher
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the pretrained name: as on a compute node without network
    problems = finetune_problems(demo_workdir, *overrides)
    assert len(problems) == 1, problems
    assert re.search(message, problems[0]), problems[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the mistake is asking for a GPU where there is none")
def test_gpu_trainer_without_a_gpu(demo_workdir):
    assert finetune_problems(demo_workdir, "trainer=gpu") == [
        "trainer.accelerator=gpu: no CUDA GPU is visible here (torch.cuda.is_available() is False): use trainer=cpu, "
        "or run on a GPU node"
    ]


def test_good_configs_pass_and_probabilities_get_a_float_tolerance(demo_workdir):
    assert finetune_problems(demo_workdir) == []
    assert finetune_problems(demo_workdir, "model.att_context_probs=[0.4,0.2,0.2,0.2]") == []  # sums to 1 + 2e-16
    assert (
        finetune_problems(
            demo_workdir,
            "model.att_context_size=[[140,13]]",
            "model.att_context_probs=null",
            "model.allow_new_lookaheads=true",
        )
        == []
    )


def test_init_checkpoints_that_cannot_stream_or_do_not_hold_together(demo_workdir, tmp_path):
    def offline(cfg):
        cfg["encoder"].update(att_context_style="regular", conv_context_size=None)

    def vocab(cfg):
        cfg["decoder"]["vocab_size"] = cfg["joint"]["num_classes"] = 100

    (problem,) = finetune_problems(demo_workdir, f"model.init_from={nemo_with(tmp_path / 'offline.nemo', offline)}")
    assert (
        "is not a cache-aware streaming model (encoder.att_context_style=regular, encoder.conv_context_size=null)"
        in problem
    )
    assert problem.endswith("start from a streaming checkpoint such as nvidia/nemotron-speech-streaming-en-0.6b")
    (problem,) = finetune_problems(demo_workdir, f"model.init_from={nemo_with(tmp_path / 'vocab.nemo', vocab)}")
    assert "its tokenizer has 128 pieces but its decoder.vocab_size is 100, joint.num_classes is 100" in problem


def test_truncated_or_corrupt_files_are_named_with_the_key_the_user_typed(demo_workdir, tmp_path):
    cut = truncated(BASE_MODEL, tmp_path / "cut.nemo")
    (problem,) = finetune_problems(demo_workdir, f"model.init_from={cut}")
    assert problem.startswith(f"model.init_from={cut}: ") and "truncated" in problem
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(os.urandom(5000))
    (problem,) = finetune_problems(demo_workdir, f"model.init_from={junk}")
    assert problem.startswith(f"model.init_from={junk}: not a readable .nemo archive")

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run_config.yaml").write_text("model: {}\n")
    good = run_dir / "checkpoints" / "good.ckpt"
    torch.save({"state_dict": {}}, good)
    bad = truncated(good, run_dir / "checkpoints" / "last.ckpt")
    (problem,) = finetune_problems(demo_workdir, f"ckpt_path={bad}")
    assert problem.startswith(f"ckpt_path={bad}: not a readable checkpoint")
    assert resolve_checkpoint(run_dir, "good") == good
    with pytest.raises(UsageError, match=f"^checkpoint={bad}: not a readable checkpoint"):
        resolve_checkpoint(run_dir, "last")
    with pytest.raises(UsageError, match=r"^checkpoint=step9: not found as a path or in .*run/checkpoints"):
        resolve_checkpoint(run_dir, "step9")

    dev = demo_workdir / "data/prepared/demo_target/dev/cuts.jsonl.gz"
    evaluate = OmegaConf.merge(OmegaConf.load(EVALUATE_CONFIG), {"model": "x.nemo", "data": str(dev)})
    for model, message in (
        (cut, "truncated"),
        (tmp_path / "gone.nemo", "no such file"),
        (bad, "not a readable checkpoint"),
        (tmp_path / "run2/checkpoints/a.ckpt", "no such file"),
    ):
        evaluate.model = str(model)
        with pytest.raises(UsageError, match=f"^model={model}: .*{message}"):
            check_evaluate(evaluate)
    lonely = tmp_path / "elsewhere" / "a.ckpt"
    lonely.parent.mkdir()
    torch.save({"state_dict": {}}, lonely)
    evaluate.model = str(lonely)
    with pytest.raises(UsageError, match=r"a .ckpt is rebuilt with its run's config, expected at .*run_config.yaml"):
        check_evaluate(evaluate)


def test_data_that_is_empty_is_refused(demo_workdir, tmp_path):
    import gzip

    empty = tmp_path / "cuts.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))  # what data_prep writes for a split where nothing was kept
    (problem,) = finetune_problems(demo_workdir, f"data.dev_sets.target_dev={empty}")
    assert (
        problem == f"data.dev_sets.target_dev={empty}: holds no cuts, so nothing to train or score on (data prep's "
        f"summary.json says what it kept): make it with python -m data_prep corpus=<name> and python -m "
        f"data_prep.blend blend=<name>"
    )


def test_memory_preflight_suggests_the_batch_duration_that_fits():
    gib = 2**30
    # 4 utterances of 20 s took the process from 1 GiB to 3 GiB: 0.5 GiB each; 2.2 GiB fit two of them.
    assert fitting_batch_duration(1 * gib, 3 * gib, 4, int(2.2 * gib), 20.0) == 40.0
    assert fitting_batch_duration(1 * gib, 3 * gib, 4, int(1.2 * gib), 20.0) == 0


def test_a_required_value_read_by_the_recipe_is_one_line_too(demo_workdir):
    done = run_cli("recipes.interpolate", [f"base={BASE_MODEL}"], demo_workdir)  # finetuned=??? not given
    assert done.returncode == 2, done.stderr
    assert done.stderr == "recipes.interpolate: error: finetuned: required, and not given (add finetuned=...)\n"


SHORT_RUN = [
    "experiment=demo_finetune",
    f"model.init_from={BASE_MODEL}",
    "logger=none",
    "~callbacks.lr_monitor",
    "callbacks.preflight.enabled=false",
    "callbacks.checkpoint.evaluate_base=false",
    "trainer.max_steps=2",
    "trainer.limit_train_batches=2",
    "resume=false",
]


@pytest.mark.parametrize(
    "override, line",
    [
        (
            "callbacks.recovery._target_=recipes.nowhere.Recovery",
            "recipes.finetune: error: callbacks.recovery: building the run from it failed (InstantiationException: "
            "Error locating target 'recipes.nowhere.Recovery'",
        ),
        (
            "+model.optim.momentum_typo=0.9",
            "recipes.finetune: error: model.optim: building the run from it failed (TypeError: ",
        ),
    ],
)
def test_set_up_failures_name_the_key_they_were_built_from(demo_workdir, override, line):
    """What a library raises while the run is built (a callback, the optimizer) is one line naming the config key,
    exit code 2, no traceback (the checks cannot see these: the class path is well-formed, the argument is NeMo's)."""
    done = run_cli("recipes.finetune", [*SHORT_RUN, "run_name=setup_failure", override], demo_workdir)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(line), done.stderr[-2000:]


def test_a_loader_that_never_yields_stops_the_run(demo_workdir):
    """NeMo's token-rate filter keeping no cut (the duration check before the loader cannot see it): Lhotse's Shar
    stream would filter forever; the watchdog ends the run after loader_timeout_s with one line."""
    started = time.monotonic()
    done = run_cli(
        "recipes.finetune",
        [*SHORT_RUN, "run_name=silent_loader", "+data.train_ds.max_tps=0.01", "loader_timeout_s=5"],
        demo_workdir,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("recipes.finetune: error: data.train_ds: the training loader gave no batch in 5 s"), last
    assert time.monotonic() - started < CLI_TIMEOUT


def test_validate_only_checks_and_exits_0_and_evaluate_names_its_own_key(demo_workdir, tmp_path):
    done = run_cli(
        "recipes.finetune",
        ["experiment=demo_finetune", "run_name=checks_cli", f"model.init_from={BASE_MODEL}", "validate_only=true"],
        demo_workdir,
    )
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout and not (demo_workdir / "exp/checks_cli/run_config.yaml").exists()
    cut = truncated(BASE_MODEL, tmp_path / "cut.nemo")
    done = run_cli(
        "recipes.evaluate", [f"model={cut}", "data=data/prepared/demo_target/dev/cuts.jsonl.gz"], demo_workdir
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"recipes.evaluate: error: model={cut}: not a readable .nemo archive (unexpected end of "
        f"data): the file is truncated or corrupt; copy or download it again\n"
    )


def test_memory_preflight_stops_a_batch_over_the_limit_before_the_first_step(demo_workdir):
    """A real pre-flight on CPU against a real (small) limit: forward + backward ran, the process's peak RSS is
    above the limit, so training stops with exit code 2 before step 1 and says what to change."""
    done = run_cli(
        "recipes.finetune",
        [
            "experiment=demo_finetune",
            "run_name=checks_preflight",
            "logger=none",
            "~callbacks.lr_monitor",
            f"model.init_from={BASE_MODEL}",
            "callbacks.preflight.max_memory_gb=0.05",
        ],
        demo_workdir,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "recipes.finetune: error: data.train_ds.max_duration=20: the largest batch (1 x 20 s) needs "
    ), last
    assert "above the 0.05 GiB of callbacks.preflight.max_memory_gb" in last
    assert last.endswith("lower data.train_ds.max_duration (data_prep filters.max_duration) or use a larger device")
    assert not list((demo_workdir / "exp/checks_preflight").glob("checkpoints/*.ckpt"))


def test_memory_preflight_leaves_training_bit_identical(demo_workdir, monkeypatch):
    """The pre-flight's forward and backward change nothing training sees: same weights after two steps with it
    on and off (RNG streams, batch-norm statistics and gradients are put back; no optimizer step)."""
    from recipes.finetune.train import train

    monkeypatch.chdir(demo_workdir)
    weights = {}
    for enabled in (True, False):
        cfg = compose_config(
            CONF,
            "finetune",
            [
                "experiment=demo_finetune",
                f"run_name=preflight_{enabled}",
                "resume=false",
                f"model.init_from={BASE_MODEL}",
                "logger=none",
                "~callbacks.lr_monitor",
                "~callbacks.checkpoint",
                "+trainer.enable_checkpointing=false",
                "trainer.max_steps=2",
                "trainer.limit_train_batches=2",
                "+trainer.limit_val_batches=0",
                "data.train_ds.batch_duration=12",
                f"callbacks.preflight.enabled={str(enabled).lower()}",
            ],
        )
        weights[enabled] = train(cfg).lightning_module.state_dict()
    assert weights[True].keys() == weights[False].keys()
    assert all(torch.equal(weights[True][k], weights[False][k]) for k in weights[True])
