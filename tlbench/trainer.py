"""The Lightning Trainer from the `trainer` config group, with the cluster plugin that decides who
requeues a SLURM job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.plugins.environments import SLURMEnvironment

from tlbench.distributed.environment import device_count, requeue_owner, slurm_managed

TLBENCH_KEYS = ("ckpt_path",)  # in the trainer group for users, not Trainer arguments


def trainer_settings(trainer: Mapping[str, Any]) -> dict[str, Any]:
    """The Trainer's arguments from the resolved `trainer` group (its `_target_` included)."""
    return {k: v for k, v in trainer.items() if k not in TLBENCH_KEYS}


def several_processes(settings: dict[str, Any]) -> bool:
    """Possibly more than one process: `auto` / -1 devices count as several (all GPUs of a node)."""
    count = device_count(settings.get("devices", 1))
    return count is None or count > 1 or int(settings.get("num_nodes", 1)) > 1


def build_trainer(settings: Mapping[str, Any], requeue: str = "auto", **kwargs: Any) -> pl.Trainer:
    """The Trainer from `settings` (trainer_settings, possibly changed); `requeue`: slurm.requeue."""
    plugins = list(kwargs.pop("plugins", []))
    if slurm_managed():
        owner = requeue_owner(requeue)
        # Lightning's SIGUSR1 handler saves and runs `scontrol requeue`; under submitit, submitit's
        # own USR2 handler resubmits, and two owners would requeue the job twice.
        plugins.append(SLURMEnvironment(auto_requeue=owner == "lightning"))
    return instantiate(dict(settings), plugins=plugins or None, **kwargs)
