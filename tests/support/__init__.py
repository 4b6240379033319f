"""Helpers shared by the tests: model files, recipe runs as subprocesses, a real Slurm cluster, random models."""
