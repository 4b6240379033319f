"""Every config and input mistake the recipes can find before compute, each as one line: key, value, fix.

Each command's schema (:class:`recipes.schema.Schema`) declares every key of its config once, with its type and
range or choices, and lists its named cross-key rules: ``finetune`` (``recipes.finetune``), ``stages``
(``recipes.evaluate``, ``recipes.interpolate``, ``recipes.export`` and its card, ``recipes.transcribe``), ``submit``
(``slurm.submit``); data preparation's are in ``data_prep/checks.py``. A check raises every problem together as one
:class:`~recipes.errors.UsageError`, so a user fixes every mistake in one go."""

from recipes.checks.finetune import FINETUNE, check_finetune
from recipes.checks.stages import (
    CARD,
    EVALUATE,
    EXPORT,
    INTERPOLATE,
    TRANSCRIBE,
    check_card,
    check_evaluate,
    check_export,
    check_interpolate,
    check_transcribe,
)
from recipes.checks.submit import SUBMIT, check_submit

SCHEMAS = {schema.name: schema for schema in (FINETUNE, EVALUATE, INTERPOLATE, EXPORT, CARD, TRANSCRIBE, SUBMIT)}

__all__ = [
    "SCHEMAS",
    "check_card",
    "check_evaluate",
    "check_export",
    "check_finetune",
    "check_interpolate",
    "check_submit",
    "check_transcribe",
]
