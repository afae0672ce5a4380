"""What SLURM (or torchrun) says about this process, read from the environment.

The run directory, the device count and the DataLoader workers default from here, and the
allocation is checked against the Trainer before anything expensive starts.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from tlbench.errors import ConfigError

REQUEUE_OWNERS = ("auto", "lightning", "submitit", "none")
MAX_DEFAULT_WORKERS = 16  # more workers per rank only add memory and start-up time
_NOT_A_STEP = 4294967290  # step ids at or above this are the batch/extern steps, not srun's


def slurm_managed() -> bool:
    """Lightning's rule: SLURM runs the tasks unless the job is an interactive shell."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def srun_step() -> int | None:
    """The srun step id of this process, or None in the batch shell (no srun)."""
    step = os.environ.get("SLURM_STEP_ID", "")
    return int(step) if step.isdigit() and int(step) < _NOT_A_STEP else None


def slurm_nodes() -> int | None:
    value = os.environ.get("SLURM_NNODES") or os.environ.get("SLURM_JOB_NUM_NODES")
    return int(value) if value and value.isdigit() else None


def slurm_tasks_per_node() -> int | None:
    """--ntasks-per-node, or the total tasks over the nodes when they divide evenly."""
    value = os.environ.get("SLURM_NTASKS_PER_NODE", "")
    if value.isdigit():
        return int(value)
    tasks, nodes = os.environ.get("SLURM_NTASKS", ""), slurm_nodes()
    if tasks.isdigit() and nodes and int(tasks) % nodes == 0:
        return int(tasks) // nodes
    return None


def slurm_job_key() -> str:
    """This job as scontrol names it: <array job>_<task> for an array task, else the job id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def run_id() -> str:
    """The run directory's stem: the SLURM job (array task, srun step) when SLURM runs this process,
    so that every rank and every requeue of the job computes the same folder; a timestamp otherwise."""
    if not slurm_managed() or "SLURM_JOB_ID" not in os.environ:
        return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    name = f"slurm{slurm_job_key()}"
    step = srun_step()
    return f"{name}.{step}" if step else name  # a second srun in the same job gets its own folder


def process_rank() -> int:
    """Global rank from the launcher's environment (torchrun, or srun under SLURM); 0 otherwise."""
    if os.environ.get("RANK", "").isdigit():
        return int(os.environ["RANK"])
    if slurm_managed() and srun_step() is not None and os.environ.get("SLURM_PROCID", "").isdigit():
        return int(os.environ["SLURM_PROCID"])
    return 0


def launched_world_size() -> int:
    """Processes started together by torchrun (WORLD_SIZE) or srun (SLURM_NTASKS); 1 otherwise,
    also when Lightning itself will start them (it sets the variables only in its children)."""
    if os.environ.get("WORLD_SIZE", "").isdigit():
        return int(os.environ["WORLD_SIZE"])
    if slurm_managed() and srun_step() is not None and os.environ.get("SLURM_NTASKS", "").isdigit():
        return int(os.environ["SLURM_NTASKS"])
    return 1


def slurm_default(what: str, default: Any) -> Any:
    """Defaults for the config (the `slurm` resolver): tasks_per_node, nodes, workers."""
    if what == "workers":
        return default_workers(default)
    if not slurm_managed():
        return default
    if what == "tasks_per_node":
        return slurm_tasks_per_node() or default
    if what == "nodes":
        return slurm_nodes() or default
    raise ConfigError(f"unknown ${{slurm:{what}}} in the config; known: tasks_per_node, nodes, workers")


def default_workers(default: Any = "auto") -> Any:
    """DataLoader workers per process: SLURM's --cpus-per-task, else (for `auto`) the CPUs this
    process may run on, minus one that stays with the main process (the forward pass, the
    collation), at most MAX_DEFAULT_WORKERS. A number given as the default is kept outside SLURM."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "") if slurm_managed() else ""
    if cpus.isdigit():
        available = int(cpus)
    elif default == "auto":
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    else:
        return default
    return min(max(available - 1, 0), MAX_DEFAULT_WORKERS)


def device_count(devices: Any) -> int | None:
    """Processes per node that a Trainer `devices` value asks for; None for 'auto' / -1."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        if not devices.lstrip("-").isdigit():
            return None
        devices = int(devices)
    return None if devices == -1 else int(devices)


def check_allocation(devices: Any, num_nodes: Any) -> None:
    """Refuse to start when the SLURM allocation and the Trainer disagree: Lightning would hang at
    'Initializing distributed', or silently run with another world size."""
    if not slurm_managed():
        return
    tasks = int(os.environ["SLURM_NTASKS"]) if os.environ["SLURM_NTASKS"].isdigit() else None
    if tasks and tasks > 1 and srun_step() is None:
        raise ConfigError(
            f"this job has {tasks} SLURM tasks but tlbench was started without srun, so the other ranks "
            "never start; launch it as `srun python -m tlbench.cli ...` (the slurm/ templates do)"
        )
    per_node, nodes = slurm_tasks_per_node(), slurm_nodes()
    wanted = device_count(devices)
    if per_node is not None and wanted is not None and wanted != per_node:
        raise ConfigError(
            f"trainer.devices={devices} but SLURM starts {per_node} task(s) per node (--ntasks-per-node); "
            f"they must be equal: drop the trainer.devices override (it defaults to the allocation) or "
            f"submit with --ntasks-per-node={wanted}"
        )
    if nodes is not None and int(num_nodes) != nodes:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} but the SLURM job has {nodes} node(s) (--nodes); they must be "
            "equal: drop the trainer.num_nodes override (it defaults to the allocation) or change --nodes"
        )


def check_split_sizes(sizes: dict[str, int], devices: Any, num_nodes: Any) -> None:
    """Every rank needs at least one image of every split: with none, Lightning's predict sampler
    fails and a rank without val/test batches would leave the others waiting in the metric sync."""
    processes = device_count(devices)
    if processes is None:
        return
    processes *= int(num_nodes)
    small = {split: n for split, n in sizes.items() if n < processes}
    if small:
        raise ConfigError(
            f"the splits {small} have fewer images than the run has processes ({processes}: trainer.devices="
            f"{devices} x trainer.num_nodes={num_nodes}); run this dataset on fewer processes"
        )


def requeue_owner(setting: str) -> str:
    """Who requeues a preempted or timed-out job: Lightning (sbatch templates) or submitit (the Hydra
    launcher, which signals with USR2 and resubmits itself). Never both."""
    if setting not in REQUEUE_OWNERS:
        raise ConfigError(f"slurm.requeue must be one of {', '.join(REQUEUE_OWNERS)}, got {setting!r}")
    if setting == "auto":
        return "submitit" if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else "lightning"
    return setting
