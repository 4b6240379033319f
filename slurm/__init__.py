"""SLURM jobs for the recipes: ``python -m slurm.submit`` renders sbatch scripts from ``conf/cluster/``."""
