"""Fine-tuning: the training loop, the model built from a checkpoint or config, the RNNT loss, resume."""
