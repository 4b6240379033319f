"""Blending prepared corpora, checked by building NeMo's own Lhotse dataloader over the result."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from test_data_prep import tone, write_lines

from data_prep.blend import write_blend
from data_prep.errors import DataPrepError
from data_prep.prepare import prepare_corpus
from recipes.config import CONF, compose_config


def _prepare(tmp_path: Path, corpus: str, words: str, n: int) -> None:
    """A small prepared corpus under tmp_path/out, named like the demo ones the blend config lists."""
    root = tmp_path / "in" / corpus
    tone(root / "audio" / "long.flac", n * 1.5 + 1)
    rows = [
        {
            "audio_filepath": "audio/long.flac",
            "offset": i * 1.5,
            "duration": 1.0 + (i % 3) * 0.2,
            "text": f"{words} {i}",
        }
        for i in range(n)
    ]
    cfg = compose_config(
        CONF / "data_prep",
        "prepare",
        [f"corpus={corpus}", f"out_root={tmp_path / 'out'}", "progress=false", "num_workers=1", "shar.shard_size=4"],
    )
    OmegaConf.update(cfg, "corpus.splits", {"train": [str(write_lines(root / "train.jsonl", rows))]}, merge=False)
    OmegaConf.update(cfg, "long_form", {}, merge=False)  # a train-only corpus has no dev split to join
    prepare_corpus(cfg)


def test_blend_writes_input_cfg_that_nemo_loads(tmp_path):
    _prepare(tmp_path, "demo_target", "target words", 8)
    _prepare(tmp_path, "demo_general", "general words", 6)
    out = tmp_path / "out"
    info = write_blend(
        compose_config(CONF / "data_prep", "blend", ["blend=demo_replay", f"out_root={out}", "num_buckets=3"])
    )

    blend_dir = out / "blends" / "demo_replay"
    entries = yaml.safe_load((blend_dir / "input_cfg.yaml").read_text())
    assert entries == [
        {
            "type": "lhotse_shar",
            "shar_path": str(out / "demo_target/train/shar"),
            "weight": 0.8,
            "tags": {"corpus": "demo_target"},
        },
        {
            "type": "lhotse_shar",
            "shar_path": str(out / "demo_general/train/shar"),
            "weight": 0.2,
            "tags": {"corpus": "demo_general"},
        },
    ]
    bins = yaml.safe_load((blend_dir / "duration_bins.yaml").read_text())
    assert 1 <= len(bins) <= 2 and bins == sorted(bins)
    assert [c["cuts"] for c in info["corpora"]] == [8, 6]

    # The training side: NeMo's own dataloader over the demo fine-tune's train_ds, pointed at this blend.
    from nemo.collections.common.data.lhotse import get_lhotse_dataloader_from_config

    class Identity:
        def __getitem__(self, cuts):
            return cuts

    finetune = compose_config(CONF, "finetune", ["experiment=demo_finetune", f"data.blend_dir={blend_dir}"])
    train_ds = OmegaConf.create(OmegaConf.to_container(finetune.data.train_ds, resolve=True))
    assert train_ds.bucket_duration_bins == bins
    # No background bucket-filling thread: the shar input repeats forever and the thread would outlive the test.
    train_ds.update(
        {
            "batch_size": 4,
            "num_workers": 0,
            "seed": 0,
            "shard_seed": 0,
            "concurrent_bucketing": False,
            "bucket_buffer_size": 50,
        }
    )
    loader = get_lhotse_dataloader_from_config(train_ds, global_rank=0, world_size=1, dataset=Identity())
    seen = set()
    for i, batch in enumerate(loader):
        for cut in batch:
            audio = cut.load_audio()
            assert cut.sampling_rate == 16000 and audio.shape == (1, round(cut.duration * 16000))
            assert cut.supervisions[0].text.split()[0] in ("target", "general")
            seen.add(cut.corpus)
        if i == 15:
            break
    assert seen == {"demo_target", "demo_general"}


def test_blend_of_unprepared_corpus_stops_with_one_message(tmp_path):
    with pytest.raises(DataPrepError, match="'demo_target' split 'train' is not prepared"):
        write_blend(compose_config(CONF / "data_prep", "blend", ["blend=demo_replay", f"out_root={tmp_path}"]))
