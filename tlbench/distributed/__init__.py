"""Running on several processes and on SLURM: what the allocation says, samplers that give every
sample to exactly one rank, and the gathering of per-rank extraction results."""
