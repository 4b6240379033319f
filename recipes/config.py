"""What every recipe shares about its config: where conf/ is, one compose helper, and the OmegaConf resolvers."""

import os
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def reweighted_blend(input_cfg: str, weights=None):
    """A blend's ``input_cfg.yaml`` path as is, or (``weights``: ``{corpus: weight}``) its entries with those
    corpora re-weighted: another replay share from the same prepared Shar, without re-running data prep."""
    if not weights or not Path(input_cfg).is_file():
        return input_cfg  # a missing blend is reported by recipes.checks, with the data prep command to run
    from recipes.errors import UsageError

    entries = OmegaConf.load(input_cfg)
    corpora = [entry.tags.corpus for entry in entries]
    unknown = sorted(set(weights) - set(corpora))
    if unknown or any(w < 0 for w in weights.values()):
        raise UsageError(
            f"data.blend_weights={dict(weights)}: give a weight >= 0 per corpus of {input_cfg} ({', '.join(corpora)})"
        )
    for entry in entries:
        entry.weight = float(weights.get(entry.tags.corpus, entry.weight))
    return entries


def register_resolvers() -> None:
    """``${load_yaml:path}`` lets a data config pick up values a data_prep step wrote (e.g. duration bins);
    ``${cwd:}`` makes the paths a run records absolute, so its checkpoints load from any directory;
    ``${reweighted_blend:input_cfg,weights}`` changes a blend's weights (:func:`reweighted_blend`);
    ``${if:condition,then,else}`` picks a value (``conf/finetune.yaml``: nothing on disk with ``validate_only``)."""
    if not OmegaConf.has_resolver("if"):
        OmegaConf.register_new_resolver("if", lambda condition, then, otherwise: then if condition else otherwise)
    if not OmegaConf.has_resolver("reweighted_blend"):
        OmegaConf.register_new_resolver("reweighted_blend", reweighted_blend)
    if not OmegaConf.has_resolver("load_yaml"):
        OmegaConf.register_new_resolver("load_yaml", lambda path: OmegaConf.load(path))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)


def compose_config(config_dir: str | Path, name: str, overrides=()):
    """``name`` from ``config_dir`` with ``overrides``, as a recipe's ``@hydra.main`` would compose it (for code
    that composes outside a Hydra main: tests, benchmarks, the Slurm submitter, data_prep's library calls)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, OverrideParseException

    from recipes.errors import UsageError, hydra_message

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            return compose(name, overrides=list(overrides))
    except (ConfigCompositionException, OverrideParseException) as err:
        raise UsageError(f"{name}: {hydra_message(err)}") from None
