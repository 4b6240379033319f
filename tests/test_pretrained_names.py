"""A pretrained name resolves through the local Hugging Face cache by the cache's own refs: the newest snapshot of
main whatever the hashes' order, a pinned branch or (abbreviated) commit, and one line saying what to do when
there is neither a cached copy nor a network."""

import shutil

import pytest

from recipes.errors import UsageError
from recipes.model_files import cached_pretrained, resolve_model_file
from tests.support.models import BASE_MODEL
from tests.support.runs import run_cli

NAME = "nvidia/nemotron-speech-streaming-en-0.6b"
# Two snapshots whose hash order is the reverse of their age: the January weights sort last.
JANUARY, MARCH = "f" * 40, "0" * 40


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache as huggingface_hub lays it out: main fetched in March, a branch still at January."""
    repo = tmp_path / f"models--{NAME.replace('/', '--')}"
    for commit in (JANUARY, MARCH):
        (repo / "snapshots" / commit).mkdir(parents=True)
        shutil.copy(BASE_MODEL, repo / "snapshots" / commit / "model.nemo")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MARCH)
    (repo / "refs" / "jan-2026").write_text(JANUARY)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def snapshot(path) -> str:
    return path.parent.name


def test_main_is_the_snapshot_refs_main_names_not_the_last_hash(hub_cache):
    assert snapshot(cached_pretrained(NAME)) == MARCH
    assert snapshot(resolve_model_file(NAME, "model.init_from")) == MARCH


def test_a_branch_or_an_abbreviated_commit_pins_the_revision(hub_cache):
    assert snapshot(resolve_model_file(NAME, "model.init_from", "jan-2026")) == JANUARY
    assert snapshot(resolve_model_file(NAME, "model.init_from", JANUARY[:10])) == JANUARY


def test_a_revision_not_cached_and_no_network_is_one_line_saying_what_to_do(hub_cache):
    with pytest.raises(UsageError) as refused:
        resolve_model_file(NAME, "model.init_from", "v2-not-fetched")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"model.init_from={NAME}: not a file, no cached copy at revision v2-not-fetched")
    assert "pass its path" in message


def test_the_finetune_recipe_takes_the_revision_from_its_config(hub_cache, demo_workdir):
    """``model.init_revision`` reaches the resolution that the config checks run (no network, no cached copy)."""
    overrides = ["experiment=demo_finetune", f"model.init_from={NAME}", "model.init_revision=v2-not-fetched"]
    args = [*overrides, "validate_only=true"]
    done = run_cli("recipes.finetune", args, demo_workdir, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1")
    assert done.returncode == 2, done.stderr
    assert "no cached copy at revision v2-not-fetched" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
