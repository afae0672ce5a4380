"""SIGUSR1 between Lightning's Trainer calls.

The sbatch templates ask SLURM for SIGUSR1 90 s before the time limit. Lightning's handler
(SLURMEnvironment(auto_requeue=True)) is installed only while Trainer.predict/fit/test run; during
the classifier fit that follows extraction, the signal's default action would end the job without
a requeue. This handler requeues it the same way (`scontrol requeue`), so the job starts again in
the same run directory and finds its features in the cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType

from tlbench.distributed.environment import slurm_job_key, slurm_managed

log = logging.getLogger(__name__)


def _requeue_now(signum: int, frame: FrameType | None) -> None:
    job = slurm_job_key()  # an array task alone, not the whole array
    log.warning("SIGUSR1: the time limit is near; requeueing SLURM job %s (it resumes in this run directory)", job)
    code = subprocess.call(["scontrol", "requeue", job])
    if code != 0:
        log.error("scontrol requeue %s failed with exit code %d; the job will not come back", job, code)


@contextlib.contextmanager
def requeue_on_sigusr1(owner: str) -> Iterator[None]:
    """Within the block, SIGUSR1 requeues the job (when SLURM runs it and Lightning owns requeueing)."""
    if owner != "lightning" or not slurm_managed() or "SLURM_JOB_ID" not in os.environ:
        yield
        return
    previous = signal.signal(signal.SIGUSR1, _requeue_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
