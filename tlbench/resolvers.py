"""OmegaConf resolvers the config uses, registered when tlbench is imported (the CLI, a submitit
job unpickling the task function, and tests composing the config all import it first)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from tlbench.distributed.environment import run_id, slurm_default


def register() -> None:
    # Cached: resolved once per config, so hydra.run.dir cannot change between two reads.
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("slurm", _slurm, replace=True)


def _slurm(what: str, default: Any = None) -> Any:
    return slurm_default(what, default)
