"""`scns`: the Slurm-like command line of SCNS-Conductor (sbatch, squeue, scontrol show job, scancel,
sinfo, sacct), a small client of the REST API written with the standard library only."""

__version__ = "0.1.0"
