"""``prepare_corpus``: one corpus from its input manifests to Lhotse cuts, Shar shards and a summary.

Phase one reads and screens every split (nothing is written yet, so a broken input stops the run before
any work). Phase two, per split, runs the shard workers, then writes ``cuts.jsonl.gz``, ``rejects.jsonl``,
``duration_bins.yaml`` and ``summary.json``; the corpus ``summary.json`` comes last.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Mapping

from lhotse import CutSet
from tqdm import tqdm

from data_prep import shards
from data_prep.bins import estimate_bins, write_bins
from data_prep.errors import DataPrepError, one_line
from data_prep.long_form import build_corpus_long_forms, corpus_entries
from data_prep.rows import Screened, Screener
from data_prep.settings import PrepSettings, settings_from_cfg
from data_prep.summary import (
    audio_summary,
    combine_audio,
    corpus_summary,
    feasibility_summary,
    split_summary,
    text_summary,
    write_json,
)
from data_prep.tokenizer import load_sentencepiece, unencodable_characters
from recipes.run_dir import atomic_path

log = logging.getLogger(__name__)


def split_dir(out_root: Path, corpus: str, split: str) -> Path:
    return Path(out_root) / corpus / split


def _load_tokenizer(path: Path | None):
    if path is None:
        return None
    try:
        return load_sentencepiece(path)
    except Exception as e:
        raise DataPrepError(f"tokenizer cannot be loaded from {path}: {one_line(e)}") from None


def _run_jobs(jobs: list[shards.ShardJob], workers: int, bar: tqdm) -> list[shards.ShardResult]:
    def done(result: shards.ShardResult) -> None:
        bar.update(result.rows)

    results = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(shards.run(job))
            done(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=shards.init_worker) as pool:
        futures = [pool.submit(shards.run, job) for job in jobs]
        for future in as_completed(futures):
            results.append(future.result())
            done(results[-1])
    return results


def _concatenate(parts: list[Path], dest: Path) -> None:
    """Gzip members concatenate into a valid gzip file: the split's manifest without re-encoding."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        if not parts:  # nothing kept: still a valid (empty) gzip file
            out.write(gzip.compress(b""))
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)


def prepare_split(settings: PrepSettings, split: str, screened: Screened) -> dict:
    started = time.perf_counter()
    root = split_dir(settings.out_root, settings.corpus.name, split)
    shar_dir, work_dir = root / "shar", root / ".shards"
    shar_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)

    groups = shards.plan(screened.candidates, settings.shard_size)
    jobs = [
        shards.ShardJob(i, group, settings.audio, shar_dir, work_dir, shards.fingerprint(group, settings.audio))
        for i, group in enumerate(groups)
    ]
    for stale in shards.existing_indices(shar_dir, work_dir) - set(range(len(jobs))):
        shards.remove(shar_dir, work_dir, stale)
    index, count = settings.part
    mine = shards.share(jobs, index, count)

    results, todo = [], []
    for job in mine:
        found = shards.reuse(job)
        if found:
            results.append(found)
        else:
            todo.append(job)
    if results:
        log.info(
            "%s/%s: %d of %d shards already done, reusing them", settings.corpus.name, split, len(results), len(mine)
        )

    with tqdm(
        total=sum(len(job.candidates) for job in mine),
        initial=sum(r.rows for r in results),
        desc=f"{settings.corpus.name}/{split}",
        unit="row",
        disable=not settings.progress,
    ) as bar:
        results += _run_jobs(todo, settings.num_workers, bar)
    results.sort(key=lambda r: r.index)
    if count > 1:  # one task of an array: its shards are done; the merge is a later run with part.count=1
        return {
            "split": split,
            "part": [index, count],
            "shards": {
                "total": len(jobs),
                "mine": [job.index for job in mine],
                "reused": len(mine) - len(todo),
                "written": len(todo),
            },
        }

    cuts_path = root / "cuts.jsonl.gz"
    _concatenate([shards.kept_cuts_path(work_dir, r.index) for r in results], cuts_path)

    rejects = screened.rejects + [entry for r in results for entry in r.rejects]
    rejects.sort(key=lambda e: (e["source"], e["line"]))
    with open(root / "rejects.jsonl", "w", encoding="utf-8") as f:
        for entry in rejects:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    kept = sum(r.kept for r in results)
    audio = Counter()
    for r in results:
        audio.update(r.audio)
    bins_path = root / "duration_bins.yaml"
    bins = estimate_bins(CutSet.from_jsonl_lazy(cuts_path), kept, settings.num_buckets)
    if bins:
        write_bins(bins_path, bins, str(cuts_path))
    else:
        bins_path.unlink(missing_ok=True)

    summary = split_summary(
        split,
        rows_in=screened.rows_in,
        kept=kept,
        kept_seconds=sum(r.kept_seconds for r in results),
        rejects=rejects,
        tokenizer_unk=screened.unk.to_dict() if settings.tokenizer else None,
        unencodable_characters=dict(unencodable_characters(screened.unk.surfaces).most_common())
        if settings.tokenizer
        else None,
        feasibility=feasibility_summary(settings),
        shards={"total": len(jobs), "reused": len(jobs) - len(todo), "written": len(todo)},
        duration_bins=bins,
        audio=audio_summary(audio, settings.audio.sample_rate, settings.audio.telephone),
        outputs={
            "cuts": str(cuts_path),
            "shar": str(shar_dir),
            "rejects": str(root / "rejects.jsonl"),
            "duration_bins": str(bins_path) if bins else None,
        },
        elapsed_s=round(time.perf_counter() - started, 2),
    )
    write_json(root / "summary.json", summary)
    return summary


def prepare_corpus(cfg: Mapping) -> dict:
    """Prepare every split of the configured corpus; returns the corpus summary (also in summary.json).
    With ``part.count`` > 1, only this part's shards are written, and the summary lists just those.

    ``cfg`` is the composed ``conf/data_prep/prepare.yaml`` (a DictConfig or a plain mapping). Raises
    :class:`DataPrepError` for a config or input problem, before anything is written.
    """
    settings = settings_from_cfg(cfg)
    long_forms = corpus_entries(settings.resolved.get("long_form"))
    tokenizer = _load_tokenizer(settings.tokenizer)
    filters = settings.audio.filters
    screened = {}
    for split, inputs in settings.corpus.splits.items():
        screener = Screener(settings.corpus, settings.text, filters.max_unk_share, filters.dedupe, tokenizer)
        screened[split] = screener.screen_split(inputs)
        log.info(
            "%s/%s: %d rows read, %d set aside on reading",
            settings.corpus.name,
            split,
            screened[split].rows_in,
            len(screened[split].rejects),
        )
    unencodable = None
    if tokenizer is not None:
        unencodable = sum((unencodable_characters(s.unk.surfaces) for s in screened.values()), Counter())
        shown = ", ".join(f"{ch!r} x{n}" for ch, n in unencodable.most_common(20)) or "none"
        log.info(
            "%s: characters the tokenizer cannot encode (after normalisation and text.map): %s",
            settings.corpus.name,
            shown,
        )
    splits = {split: prepare_split(settings, split, s) for split, s in screened.items()}
    if settings.part[1] > 1:
        return {"corpus": settings.corpus.name, "part": list(settings.part), "splits": splits}
    summary = corpus_summary(
        settings.corpus.name,
        splits,
        settings.resolved,
        feasibility=feasibility_summary(settings),
        text=text_summary(settings.resolved["text"], unencodable),
        audio=combine_audio([s["audio"] for s in splits.values()]),
    )
    write_json(settings.corpus_dir / "summary.json", summary)
    build_corpus_long_forms(settings.corpus_dir, long_forms)  # continuous dev streams, from the finished splits
    return summary
