"""Training, streaming evaluation and export of cache-aware FastConformer-RNNT models."""
import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${load_yaml:path}`` lets a data config pick up values a data_prep step wrote (e.g. duration bins);
    ``${cwd:}`` makes the paths a run records absolute, so its checkpoints load from any directory."""
    if not OmegaConf.has_resolver("load_yaml"):
        OmegaConf.register_new_resolver("load_yaml", lambda path: OmegaConf.load(path))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
