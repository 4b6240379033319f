"""Training, streaming evaluation and export of cache-aware FastConformer-RNNT models."""
from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${load_yaml:path}`` lets a data config pick up values a data_prep step wrote (e.g. duration bins)."""
    if not OmegaConf.has_resolver("load_yaml"):
        OmegaConf.register_new_resolver("load_yaml", lambda path: OmegaConf.load(path))
