"""Every shell command in the ```bash blocks of README.md and docs/*.md, run as a user would run it, so that a
documented command cannot rot unnoticed.

A block's commands are its lines, continuation lines (a trailing ``\\``) joined and ``#`` comments stripped; a line
that only sets a shell variable (``MODEL=...``) is run before each later command of its block. They run
in bash, in document order (README.md, then docs/ by name), in one scratch directory laid out like the repository
after the demo's first stages: the small prepared demo corpus of the ``demo_workdir`` fixture and the demo's base
model; for a command that names ``exp/demo_finetune``, also a 3-step run of the demo's fine-tuning there, with a
checkpoint and streaming report per step. Each has a hard timeout; its process group is killed when it ends, when it
times out, or when pytest is stopped. A block whose line above is
``<!-- docs-test: skip (reason) -->`` is listed as skipped with that reason: a command that needs a GPU, a cluster
or the network, or that trains for minutes, is written in the docs in a check mode they name (``validate_only=true``,
``--dry-run``, ``--help``) or marked so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.config import REPO
from tests.support.models import BASE_MODEL
from tests.support.runs import subprocess_env

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>.*)\)\s*-->")
ASSIGNMENT = re.compile(r"(export\s+)?[A-Za-z_][A-Za-z0-9_]*=\S*")
OPENING_FENCE = re.compile(r"\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>[\w+-]*)")
COMMAND_TIMEOUT_S = 900  # generous: a hang, not a slow shared machine, should fail it

DEMO_RUN = "exp/demo_finetune"
# The demo's fine-tuning, shrunk: three pseudo-epochs of one batch, a checkpoint each with a small streaming report
# on the two dev sets.
TINY_RUN = (
    "python -m recipes.finetune experiment=demo_finetune trainer.max_steps=3 trainer.limit_train_batches=1 "
    "data.train_ds.batch_duration=8 'callbacks.checkpoint.eval_sets=${data.dev_sets}' "
    "callbacks.checkpoint.max_utterances=2 callbacks.checkpoint.batch_size=8 callbacks.checkpoint.evaluate_base=false "
    "callbacks.preflight.enabled=false trainer.enable_progress_bar=false"
)


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: from a ``#`` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def block_commands(lines: list[str], first_line: int) -> list[tuple[int, str]]:
    """``(line number, command)`` of a block's lines: continuations joined, comments and blank lines dropped."""
    commands, parts, start = [], [], first_line
    for number, line in enumerate(lines, first_line):
        code = strip_comment(line).strip()
        if not parts:
            start = number
        continued = code.endswith("\\")
        parts.append(code[:-1].strip() if continued else code)
        if not continued:
            command = " ".join(part for part in parts if part)
            if command:
                commands.append((start, command))
            parts = []
    if any(parts):
        commands.append((start, " ".join(part for part in parts if part)))
    return commands


def doc_commands(text: str) -> tuple[list[tuple[int, str, str | None]], list[int]]:
    """The commands of a Markdown text's ```bash blocks as ``(line number, command, skip reason or None)``, and the
    line numbers of skip markers that stand above no ```bash block (a misplaced marker)."""
    lines = text.splitlines()
    commands, stray, marker, i = [], [], None, 0
    while i < len(lines):
        opening = OPENING_FENCE.fullmatch(lines[i])
        if opening is None:
            if lines[i].strip():
                if marker is not None:
                    stray.append(marker[0])
                found = SKIP.fullmatch(lines[i].strip())  # a marker is a line of its own
                marker = (i + 1, found.group("reason").strip()) if found else None
            i += 1
            continue
        fence = opening.group("fence")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        if opening.group("info") == "bash":
            reason, assignments = marker[1] if marker else None, []
            for number, command in block_commands(lines[i + 1 : end], i + 2):
                if ASSIGNMENT.fullmatch(command):
                    assignments.append(command)  # a variable the block's later commands use
                else:
                    commands.append((number, "\n".join([*assignments, command]), reason))
        elif marker is not None:
            stray.append(marker[0])
        marker, i = None, end + 1
    if marker is not None:
        stray.append(marker[0])
    return commands, stray


def documented_commands() -> list:
    params = []
    for doc in DOCS:
        name = str(doc.relative_to(REPO))
        for line, command, reason in doc_commands(doc.read_text(encoding="utf-8"))[0]:
            marks = [pytest.mark.skip(reason=reason or "no reason given")] if reason is not None else []
            params.append(pytest.param(command, id=f"{name}:{line}", marks=marks))
    return params


def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")  # run_bash's finally kills the command's process group first


def run_bash(command: str, cwd: Path, timeout: float) -> tuple[int, str]:
    """Exit status and output (stdout and stderr) of ``command`` in bash from ``cwd``, with the repository's
    ``python`` first on the PATH; the whole process group is killed when it ends, times out or pytest gets SIGTERM
    (e.g. from ``timeout``: the command's own session would not)."""
    env = subprocess_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",  # a documented command must not need the network
        OMP_NUM_THREADS="1",  # as tests/support/runs.py: spinning OpenMP threads crawl on a busy machine
    )
    previous = signal.signal(signal.SIGTERM, _stop)
    proc = subprocess.Popen(
        ["bash", "-c", f"set -eo pipefail\n{command}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{command}\ndid not finish within {timeout} s; its output ends:\n{output[-4000:]}")
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left running in the background
        except ProcessLookupError:
            pass
    return proc.returncode, output


@pytest.fixture(scope="module")
def docs_workdir(demo_workdir, tmp_path_factory) -> Path:
    """A scratch directory with what the docs' commands read: the prepared demo data and the base model."""
    work = tmp_path_factory.mktemp("docs_commands")
    shutil.copytree(demo_workdir / "data", work / "data")
    (work / "models").mkdir()
    shutil.copy2(BASE_MODEL, work / "models" / "demo_base.nemo")
    return work


@pytest.fixture(scope="module")
def demo_run(docs_workdir) -> Path:
    """``exp/demo_finetune`` in the scratch directory: the demo's fine-tuning, shrunk to 3 steps."""
    status, output = run_bash(TINY_RUN, docs_workdir, timeout=1800)
    assert status == 0, f"{TINY_RUN}\nexited with {status}:\n{output[-4000:]}"
    return docs_workdir / DEMO_RUN


@pytest.mark.parametrize("command", documented_commands())
def test_documented_command_runs(command, docs_workdir, request):
    if DEMO_RUN in command:
        request.getfixturevalue("demo_run")
    status, output = run_bash(command, docs_workdir, COMMAND_TIMEOUT_S)
    assert status == 0, f"{command}\nexited with {status}; its output ends:\n{output[-4000:]}"


def test_every_skip_marker_stands_above_a_bash_block():
    stray = {str(doc.relative_to(REPO)): doc_commands(doc.read_text(encoding="utf-8"))[1] for doc in DOCS}
    assert not {doc: lines for doc, lines in stray.items() if lines}, "skip markers above no ```bash block"


def test_commands_are_read_as_a_user_reads_them():
    text = "\n".join(
        [
            "Intro.",  # 1
            "```bash",  # 2
            "python -m a x=1   # a comment",  # 3
            "# a whole-line comment",  # 4
            "python -m b 'y=[1,2]' \\",  # 5
            "    z='#not a comment' \\",  # 6
            "    w=2  # the end",  # 7
            "",  # 8
            "```",  # 9
            "<!-- docs-test: skip (needs a GPU) -->",  # 10
            "",  # 11
            "```bash",  # 12
            "MODEL=/models/x.nemo",  # 13
            "python -m c model=$MODEL",  # 14
            "```",  # 15
            "```text",  # 16
            "python -m not_a_command",  # 17
            "```",  # 18
            "<!-- docs-test: skip (above no block) -->",  # 19
            "Text.",  # 20
        ]
    )
    commands, stray = doc_commands(text)
    assert commands == [
        (3, "python -m a x=1", None),
        (5, "python -m b 'y=[1,2]' z='#not a comment' w=2", None),
        (14, "MODEL=/models/x.nemo\npython -m c model=$MODEL", "needs a GPU"),
    ]
    assert stray == [19]
