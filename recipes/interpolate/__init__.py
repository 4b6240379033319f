"""WiSE-FT weight interpolation between a base model and its fine-tune."""
