"""Lightning callbacks of the fine-tuning recipe."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from recipes.errors import UsageError
from recipes.evaluate.reports import BASE_REPORT, REPORT_SUFFIX, update_run_reports, write_report
from recipes.evaluate.run import stream_sets, summarise, wer_metrics
from recipes.evaluate.sets import EvalSet, load_eval_set
from recipes.evaluate.wer import word_error_counts
from recipes.export.checkpoints import RankBy
from recipes.finetune.callbacks.retention import KEEP_ALL, prune_checkpoints
from recipes.streaming.engine import StreamingRecognizer
from recipes.streaming.geometry import lookahead_ms
from recipes.streaming.modes import resync_position_encoding

log = logging.getLogger(__name__)


class StreamingEvalCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that measures real cache-aware streaming WER on every checkpoint it writes.

    For each dev set and lookahead it logs ``stream_wer/<set>/<ms>ms`` and writes ``<checkpoint>.stream_wer.json``
    (per-utterance hypotheses and WERs) beside the checkpoint. Under DDP every rank streams its share of
    the utterances, so no rank idles into a collective timeout while rank 0 evaluates. With ``evaluate_base``, the
    model as training starts (the base a fine-tuning run adapts) is scored the same way first, as
    ``base.stream_wer.json``: the run's table then shows what each checkpoint gained and lost against it.
    ``long_form_sets`` (continuous streams, ``data_prep.long_form``) are streamed and reported the same way, beside
    ``eval_sets``; they are kept apart from them because export checks its runtimes on ``eval_sets``.
    """

    def __init__(
        self,
        eval_sets: Mapping[str, str],
        lookaheads: Sequence[Sequence[int]],
        max_utterances: int | None = 200,
        batch_size: int = 32,
        evaluate_base: bool = True,
        long_form_sets: Mapping[str, str] | None = None,
        keep_last: int = KEEP_ALL,
        keep_best: int = 0,
        rank_by: Mapping | None = None,
        optimizer_state: str = "last",
        **checkpoint_kwargs,
    ):
        super().__init__(**checkpoint_kwargs)
        # Retention (recipes.finetune.callbacks.retention): by the first dev set at the default lookahead unless set.
        rank_by = dict(rank_by or {})
        self.keep_last, self.keep_best = keep_last, keep_best
        self.rank_by = RankBy(
            rank_by.get("set") or next(iter(eval_sets), ""),
            int(rank_by.get("lookahead_ms") or lookahead_ms(lookaheads[0])),
            rank_by.get("metric") or "wer",
        )
        self.optimizer_state = optimizer_state  # "last": only last.ckpt holds it (what resuming needs); "all"
        self.evaluate_base = evaluate_base
        # eval_sets={} means plain checkpoints: no long-form sets either.
        self.eval_set_paths = {**eval_sets, **(long_form_sets or {})} if eval_sets else {}
        self.lookaheads = [list(la) for la in lookaheads]
        self.max_utterances = max_utterances
        self.batch_size = batch_size
        self._eval_sets: list[EvalSet] | None = None
        self._last_report: tuple[int, dict] | None = None

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        missing = [
            f"callbacks.checkpoint.eval_sets.{name}={path}: not found: prepare it with python -m data_prep"
            for name, path in self.eval_set_paths.items()
            if not Path(path).is_file()
        ]
        if missing:
            raise UsageError(*missing)

    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        # A resumed run (ckpt_path set: its weights are already the checkpoint's) scored its base when it started.
        if not (self.eval_set_paths and self.evaluate_base and trainer.ckpt_path is None):
            return
        report = self._evaluate(trainer)
        if trainer.is_global_zero:
            write_report({**report, "base": True}, Path(self.dirpath) / f"{BASE_REPORT}{REPORT_SUFFIX}")
            update_run_reports(self.dirpath)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        is_last = Path(filepath).name == f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        weights_only = self.save_weights_only
        self.save_weights_only = weights_only or (self.optimizer_state == "last" and not is_last)
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = weights_only
        if not self.eval_set_paths:  # eval_sets={}: plain checkpoints
            return
        # ModelCheckpoint may write two files for one step (top-k and last): evaluate, and redraw the run's
        # table and plot, for the first only; the second gets the same report.
        first_file_of_step = self._last_report is None or self._last_report[0] != trainer.global_step
        if first_file_of_step:
            self._last_report = (trainer.global_step, self._evaluate(trainer))
        report = self._last_report[1]
        if trainer.is_global_zero:
            write_report({**report, "checkpoint": str(filepath)}, f"{filepath}.stream_wer.json")
            if first_file_of_step:
                update_run_reports(Path(filepath).parent)  # stream_wer.md and stream_wer.png across checkpoints
            if not is_last:
                prune_checkpoints(Path(filepath).parent, self.keep_last, self.keep_best, self.rank_by)

    def _evaluate(self, trainer: Trainer) -> dict:
        start = time.perf_counter()
        if self._eval_sets is None:
            self._eval_sets = [
                load_eval_set(name, path, self.max_utterances) for name, path in self.eval_set_paths.items()
            ]
        recognizer = StreamingRecognizer(trainer.lightning_module, batch_size=self.batch_size)
        shares = [es.shard(trainer.global_rank, trainer.world_size) for es in self._eval_sets]
        streamed = stream_sets(recognizer, shares, self.lookaheads)
        resync_position_encoding(trainer.lightning_module)
        per_set = summarise(_gather(streamed, trainer.world_size))
        seconds = time.perf_counter() - start
        report = {"step": trainer.global_step, "epoch": trainer.current_epoch, "eval_seconds": seconds, "sets": per_set}
        metrics = wer_metrics(per_set)
        for logger in trainer.loggers:
            logger.log_metrics({**metrics, "stream_eval_seconds": seconds}, step=trainer.global_step)
        log.info(
            "step %d streaming WER (%.1f s): %s",
            trainer.global_step,
            seconds,
            ", ".join(f"{k.removeprefix('stream_wer/')}={v:.3f}" for k, v in metrics.items()),
        )
        return report


def _gather(per_set: dict, world_size: int) -> dict:
    """Merge every rank's share of utterances and compute time into one result per set and lookahead."""
    if world_size == 1:
        return per_set
    shares = [None] * world_size
    dist.all_gather_object(shares, per_set)
    merged = shares[0]
    for share in shares[1:]:
        for name, by_lookahead in share.items():
            for key, entry in by_lookahead.items():
                target = merged[name][key]
                target["utterances"] += entry["utterances"]
                target["audio_seconds"] += entry["audio_seconds"]
                target["compute_seconds"] += entry["compute_seconds"]
    return merged


class LookaheadValidationWER(Callback):
    """WER of NeMo's validation batches at every lookahead, logged as ``val_wer/<ms>ms``.

    NeMo's own ``val_wer`` only measures the default (first) lookahead. The offline pass with chunked-limited
    masks gives exactly the streaming output, so this is the streaming WER of the whole validation set.
    """

    def __init__(self, lookaheads: Sequence[Sequence[int]], batch_size: int = 32):
        self.lookaheads = [list(la) for la in lookaheads]
        self.batch_size = batch_size
        self._refs: list[str] = []
        self._hyps: dict[str, list[str]] = {}

    def on_validation_epoch_start(self, trainer: Trainer, pl_module) -> None:
        self._refs, self._hyps = [], {f"{lookahead_ms(la)}ms": [] for la in self.lookaheads}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        audio, audio_lens, tokens, token_lens = batch[:4]
        audios = [a[:n].float().cpu().numpy() for a, n in zip(audio, audio_lens)]
        self._refs += [pl_module.tokenizer.ids_to_text(t[:n].tolist()) for t, n in zip(tokens, token_lens)]
        recognizer = StreamingRecognizer(pl_module, batch_size=self.batch_size)
        for la in self.lookaheads:
            self._hyps[f"{lookahead_ms(la)}ms"] += recognizer.offline(audios, la).texts

    def on_validation_epoch_end(self, trainer: Trainer, pl_module) -> None:
        # Every rank takes part in the same collectives, also one that saw no validation batch (else the others
        # would wait for it forever); the WER is the corpus WER over all ranks' errors and reference words.
        resync_position_encoding(pl_module)
        counts = torch.tensor(
            [word_error_counts(self._refs, hyps) for hyps in self._hyps.values()],
            dtype=torch.float64,
            device=pl_module.device,
        )
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        for key, (errors, words) in zip(self._hyps, counts.tolist()):
            if words:
                pl_module.log(f"val_wer/{key}", errors / words)
