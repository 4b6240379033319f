"""The cache-aware streaming engine: chunk geometry, cached attention projections, CPU kernels, decoders."""
