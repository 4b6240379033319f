"""Real recipe runs as subprocesses (``python -m recipes.finetune`` / ``recipes.evaluate``), for the DDP, resume and
preemption tests.

Each run gets its own session, so a timeout or a test failure kills it with all its DDP ranks (``killpg``);
the ``training_runs`` fixture kills whatever a test left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recipes.config import REPO
from tests.support.models import BASE_MODEL


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a recipe process it starts, plus ``extra``. Without ``WANDB_SERVICE``: wandb
    exports it once this process has logged a run in-process, and a child would then attach to this process's wandb
    service, which still holds a killed child's run id ("run ID is in use" when the same run resumes)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, **extra}


# The demo's fine-tuning shrunk: short pseudo-epochs, small batches, a few utterances per streaming evaluation.
TINY = [
    "experiment=demo_finetune",
    f"model.init_from={BASE_MODEL}",
    "data.train_ds.batch_duration=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=offline",
    "callbacks.checkpoint.batch_size=8",
]


CLI_TIMEOUT = 240  # seconds for a command that stops at its checks (the machine may be shared); killed past that


def run_cli(
    module: str, args: list[str], cwd: Path, timeout: float = CLI_TIMEOUT, **env
) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` in ``cwd`` with this repository importable and ``env`` added, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(PYTHONPATH=str(REPO), **env),
    )


def checkpointed_run(workdir: Path, run: Path, steps, max_utterances: int) -> list[Path]:
    """``run`` as a fine-tuning run directory: ``run_config.yaml`` (the demo fine-tuning config, composed in
    ``workdir``) and a checkpoint for each of ``steps``, the demo base model's float weights moved by 1e-3 more at
    each. Returns the checkpoints' paths."""
    from nemo.collections.asr.models import ASRModel
    from omegaconf import OmegaConf

    from recipes.config import CONF, compose_config
    from recipes.run_dir import RUN_CONFIG

    overrides = ["experiment=demo_finetune", f"model.init_from={BASE_MODEL}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        cfg = compose_config(CONF, "finetune", [*overrides, f"callbacks.checkpoint.max_utterances={max_utterances}"])
        OmegaConf.save(cfg, run / RUN_CONFIG, resolve=True)
    state = ASRModel.restore_from(str(BASE_MODEL), map_location="cpu").state_dict()
    (run / "checkpoints").mkdir()
    paths = []
    for i, step in enumerate(steps, start=1):
        moved = {k: v + 1e-3 * i if v.is_floating_point() else v for k, v in state.items()}
        paths.append(run / "checkpoints" / f"step{step:06d}.ckpt")
        torch.save({"state_dict": moved, "global_step": step, "epoch": i}, paths[-1])
    return paths


class RecipeRun:
    """``python -m <module> <args>`` from ``workdir`` in its own session, output appended to ``log_path``."""

    def __init__(self, workdir: Path, module: str, args: list[str], log_path: Path):
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = subprocess_env(PYTHONPATH=str(REPO), WANDB_SILENT="true", OMP_NUM_THREADS="1")
        with open(log_path, "a") as log:
            log.write(f"\n=== {module} {' '.join(args)}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float) -> int:
        """Exit status; on timeout the whole process group is killed and the test fails with the log's tail."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"training did not finish within {timeout} s:\n{self.log_tail()}")

    def wait_for(self, path: Path, timeout: float) -> None:
        """Wait until ``path`` exists while the run is alive."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"training exited ({self.proc.returncode}) before writing {path}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {path} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the main process only (DDP ranks launched by it do not get it)."""
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:]


class TrainingRun(RecipeRun):
    """One ``recipes.finetune`` process (and the DDP ranks it launches), its output in ``<run_dir>.log``."""

    def __init__(self, workdir: Path, run_name: str, overrides: list[str]):
        self.run_dir = workdir / "exp" / run_name
        super().__init__(
            workdir, "recipes.finetune", [f"run_name={run_name}", *TINY, *overrides], self.run_dir.with_suffix(".log")
        )


@pytest.fixture
def training_runs():
    """``start(workdir, run_name, overrides)`` starts a training run (``start.run(...)``: any ``RecipeRun``); all
    are killed (process groups) when the test ends."""
    runs: list[RecipeRun] = []

    def start(workdir: Path, run_name: str, overrides: list[str]) -> TrainingRun:
        runs.append(TrainingRun(workdir, run_name, overrides))
        return runs[-1]

    def run(*args) -> RecipeRun:
        runs.append(RecipeRun(*args))
        return runs[-1]

    start.run = run

    yield start
    for run in runs:
        run.kill()


def checkpoint_weights(path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(global step, model weights) of a Lightning checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["global_step"], checkpoint["state_dict"]


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, (
        f"{len(differing)} of {len(a)} tensors differ, e.g. {differing[0]}: max abs difference "
        f"{(a[differing[0]].float() - b[differing[0]].float()).abs().max().item():.3g}"
    )
