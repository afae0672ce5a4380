"""The Lightning Trainer from the `trainer` config group, with the cluster plugin that decides who
requeues a SLURM job."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment

from tlbench.distributed.environment import device_count, requeue_owner, slurm_managed

TLBENCH_KEYS = ("ckpt_path",)  # in the trainer group for users, not Trainer arguments


def trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    settings: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    for key in TLBENCH_KEYS:
        settings.pop(key, None)
    return settings


def several_processes(settings: dict[str, Any]) -> bool:
    """Possibly more than one process: `auto` / -1 devices count as several (all GPUs of a node)."""
    count = device_count(settings.get("devices", 1))
    return count is None or count > 1 or int(settings.get("num_nodes", 1)) > 1


def build_trainer(cfg: DictConfig, settings: dict[str, Any] | None = None, **kwargs: Any) -> pl.Trainer:
    """`settings` (from trainer_settings, possibly changed) default to the config's."""
    settings = trainer_settings(cfg) if settings is None else settings
    plugins = list(kwargs.pop("plugins", []))
    if slurm_managed():
        owner = requeue_owner(str(cfg.get("slurm", {}).get("requeue", "auto")))
        # Lightning's SIGUSR1 handler saves and runs `scontrol requeue`; under submitit, submitit's
        # own USR2 handler resubmits, and two owners would requeue the job twice.
        plugins.append(SLURMEnvironment(auto_requeue=owner == "lightning"))
    return instantiate(settings, plugins=plugins or None, **kwargs)
