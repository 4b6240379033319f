"""The Lightning callbacks of a fine-tuning run, one per module (conf/callbacks/ lists them)."""
