"""Data preparation: Granary-style corpora to Lhotse cuts and Shar shards (see docs/data_prep.md).

Callable API: ``prepare_corpus(compose(["corpus=demo_general"]))`` and
``write_blend(compose(["blend=demo_replay"], config_name="blend"))``.
"""
