"""Training, streaming evaluation and export of cache-aware FastConformer-RNNT models, one subpackage per stage."""
