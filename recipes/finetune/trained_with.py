"""What a model was trained with, kept when it is fine-tuned.

The loss (with its FastEmit weight and gradient clamp), SpecAugment, decoding, preprocessor and tokenizer of the
fine-tuning config are the restored checkpoint's own (or ``architecture``'s when training from scratch). The recipe's
``model.loss``, ``model.spec_augment`` and ``model.decoding`` keys are null by default ("the model's"); a key set
there replaces that one value and nothing else. Every such value is listed with its source, in the run log and on
the results card. No NeMo import: the card lists the same values from a run's config.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

CHECKPOINT, ARCHITECTURE, OVERRIDE = "checkpoint", "architecture", "override"
OVERRIDABLE = ("loss", "spec_augment", "decoding")
SPEC_AUGMENT_CLASS = "nemo.collections.asr.modules.SpectrogramAugmentation"
# NeMo's RNNT loss "default" is its numba loss; a loss's arguments live under "<resolved name>_kwargs".
DEFAULT_LOSS = "warprnnt_numba"
LOSS_DEFAULTS = {"fastemit_lambda": 0.0, "clamp": -1.0}  # NeMo's, when the config does not say


@dataclass(frozen=True)
class Setting:
    """One value the model trains (or decodes) with, and where it came from."""

    key: str
    value: object
    source: str  # checkpoint, architecture or override


def loss_kwargs_key(loss_name: str) -> str:
    return f"{DEFAULT_LOSS if loss_name == 'default' else loss_name}_kwargs"


def loss_settings(loss: DictConfig | dict | None) -> dict[str, float]:
    """FastEmit weight and clamp of a NeMo ``loss`` section (NeMo's defaults where it does not say)."""
    loss = loss or {}
    kwargs = loss.get(loss_kwargs_key(loss.get("loss_name", "default"))) or {}
    return {key: float(kwargs.get(key, default)) for key, default in LOSS_DEFAULTS.items()}


def with_loss_name(loss: DictConfig | dict, loss_name: str) -> dict:
    """``loss`` computed by NeMo's ``loss_name``: its FastEmit weight and clamp moved under that name's arguments."""
    return {"loss_name": loss_name, loss_kwargs_key(loss_name): loss_settings(loss)}


def flatten(section: DictConfig | dict | None, prefix: str = "") -> dict[str, object]:
    """The leaves of a config section as dotted keys (NeMo's ``_target_`` left out)."""
    container = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) else section
    flat: dict[str, object] = {}
    for key, value in (container or {}).items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif key != "_target_":
            flat[f"{prefix}{key}"] = value
    return flat


def keep_trained_with(base: DictConfig, model: DictConfig) -> tuple[DictConfig, list[Setting]]:
    """``base`` (the restored model's config, or the architecture) with the recipe's set override keys of
    ``model`` (the ``model`` config group) merged in, and every kept value with its source."""
    merged = OmegaConf.create(OmegaConf.to_container(base, resolve=True))
    source = CHECKPOINT if model.get("init_from") else ARCHITECTURE
    given = {
        section: {key: value for key, value in flatten(model.get(section)).items() if value is not None}
        for section in OVERRIDABLE
    }
    if given["spec_augment"] and merged.get("spec_augment") is None:  # a model saved without SpecAugment
        merged.spec_augment = {"_target_": SPEC_AUGMENT_CLASS}
    for section in ("spec_augment", "decoding"):
        for key, value in given[section].items():
            OmegaConf.update(merged, f"{section}.{key}", value, force_add=True)
    loss = OmegaConf.to_container(merged.get("loss") or OmegaConf.create({"loss_name": "default"}))
    settings = {**loss_settings(loss), **{k: float(v) for k, v in given["loss"].items()}}
    kwargs_key = loss_kwargs_key(loss.get("loss_name", "default"))
    if given["loss"] or kwargs_key in loss:  # a loss config without them stays as it is (NeMo's defaults apply)
        loss[kwargs_key] = settings
    merged.loss = loss

    def origin(section: str, key: str) -> str:
        return OVERRIDE if key in given.get(section, {}) else source

    rows = [Setting("loss.loss_name", loss.get("loss_name", "default"), source)]
    rows += [Setting(f"loss.{key}", value, origin("loss", key)) for key, value in settings.items()]
    for section in ("spec_augment", "decoding"):
        for key, value in flatten(merged.get(section)).items():
            rows.append(Setting(f"{section}.{key}", value, origin(section, key)))
    rows += [Setting(k, v, source) for k, v in flatten(merged.get("preprocessor"), "preprocessor.").items()]
    rows.append(Setting("tokenizer.type", (merged.get("tokenizer") or {}).get("type"), source))
    rows.append(Setting("tokenizer.vocabulary_size", merged.decoder.get("vocab_size"), source))
    return merged, rows


def settings_table(rows: list[Setting]) -> list[str]:
    """Markdown table lines: key, value, source."""
    lines = ["| setting | value | from |", "|---|---|---|"]
    return lines + [f"| `{row.key}` | `{row.value}` | {row.source} |" for row in rows]
