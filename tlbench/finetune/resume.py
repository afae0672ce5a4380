"""Where a fine-tuning run resumes from: the run directory's own last.ckpt (a requeued SLURM job, or
a submitit resubmission, lands in the same directory), else an explicit trainer.ckpt_path.

Resuming is at epoch boundaries only. Lightning's SIGUSR1 handler also writes a mid-epoch
hpc_ckpt_<n>.ckpt before requeueing, but Lightning restarts that epoch's data from the beginning,
so a run resumed from it sees some images twice and differs from an uninterrupted run. Those files
are moved to checkpoints/mid_epoch/ (kept, not used), and last.ckpt is used instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def resume_checkpoint(explicit: str | None, run_dir: Path) -> str | None:
    """This run directory's own last.ckpt first: a requeued continuation of another run (explicit
    trainer.ckpt_path) must not start over from that run's checkpoint at every attempt."""
    set_aside_mid_epoch_checkpoints(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s (this run directory's last completed epoch)", last)
        return str(last)
    return explicit or None


def set_aside_mid_epoch_checkpoints(run_dir: Path) -> None:
    """Every rank calls this; whichever renames a file first wins, the others find it gone."""
    aside = run_dir / "checkpoints" / "mid_epoch"
    for path in sorted(run_dir.glob("hpc_ckpt_*.ckpt")):
        aside.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, aside / path.name)
            log.info("set aside the mid-epoch checkpoint %s (resuming at an epoch boundary)", path.name)
