"""Data preparation: Granary-style corpora to Lhotse cuts and Shar shards (see docs/data_prep.md).

Callable API: ``prepare_corpus(compose_config(CONF / "data_prep", "prepare", ["corpus=demo_general"]))`` and
``write_blend(compose_config(CONF / "data_prep", "blend", ["blend=demo_replay"]))`` (``recipes.config``).
"""
