"""Where a fine-tuning run resumes from, and what a checkpoint must match to be resumed.

The run directory's own last.ckpt comes first (a requeued SLURM job, or a submitit resubmission,
lands in the same directory), else an explicit trainer.ckpt_path.

Resuming is at epoch boundaries only. Lightning's SIGUSR1 handler also writes a mid-epoch
hpc_ckpt_<n>.ckpt before requeueing, but Lightning restarts that epoch's data from the beginning,
so a run resumed from it sees some images twice and differs from an uninterrupted run. Those files
are moved to checkpoints/mid_epoch/ (kept, not used), and last.ckpt is used instead.

Every checkpoint carries, under CHECKPOINT_KEY (written by TrainingRecord), the settings that
determine training (see pipeline.training_settings), the attempt that wrote it (SLURM job and
restart count) and the training time so far, summed over attempts. A resume is refused when the
settings differ: Lightning would restore the old optimizer and LR scheduler (the old learning
rates), the old epoch and curve, and the result would record the new configuration.

overwrite=true starts the run directory afresh (its checkpoints/, csv/ and results.json are
removed), except in a requeued attempt of the SLURM job that wrote its last.ckpt: that one
continues, so that a preempted overwrite=true job does not start over at every requeue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from tlbench.distributed.environment import process_rank, slurm_job_key
from tlbench.errors import ConfigError
from tlbench.tracking.loggers import flatten

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "tlbench"
# What overwrite=true removes from a run directory before a fresh fine-tuning run.
RUN_STATE = ("checkpoints", "csv", "results.json")


@dataclass(frozen=True)
class Resume:
    path: str
    own: bool  # this run directory's last.ckpt (a continuation of this run), else trainer.ckpt_path


def find_resume(explicit: str | None, run_dir: Path, overwrite: bool = False) -> Resume | None:
    """This run directory's own last.ckpt first: a requeued continuation of another run (explicit
    trainer.ckpt_path) must not start over from that run's checkpoint at every attempt. With
    `overwrite`, the run directory's state is removed first unless this is a requeue of the job
    that wrote it. Every rank decides alike; only rank 0 removes files."""
    set_aside_mid_epoch_checkpoints(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    own = last.is_file()
    if overwrite and not (own and continues_this_job(last)):
        if explicit and _inside(Path(explicit), run_dir / "checkpoints"):
            raise ConfigError(
                f"trainer.ckpt_path={explicit} lies in this run directory's checkpoints/, which overwrite=true "
                "removes: copy it elsewhere first, or run in another directory (hydra.run.dir=...)"
            )
        if _first_process():
            start_afresh(run_dir)
        own = False  # whether or not rank 0 has removed it yet, no rank resumes the old last.ckpt
    if own:
        log.info("resuming from %s (this run directory's last completed epoch)", last)
        return Resume(str(last), own=True)
    return Resume(str(explicit), own=False) if explicit else None


def resume_checkpoint(explicit: str | None, run_dir: Path, overwrite: bool = False) -> str | None:
    """The checkpoint path find_resume chooses, or None."""
    found = find_resume(explicit, run_dir, overwrite)
    return found.path if found else None


def start_afresh(run_dir: Path) -> None:
    """overwrite=true: remove what an earlier run left in `run_dir` (checkpoints, CSV curve, result)."""
    removed = []
    for name in RUN_STATE:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log.warning("overwrite=true: removed the earlier run's %s from %s; training starts afresh", removed, run_dir)


def attempt_identity() -> dict[str, Any] | None:
    """The SLURM job (array task) and its restart count; None outside SLURM."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {"slurm_job": slurm_job_key(), "restart": int(restart) if restart.isdigit() else 0}


def continues_this_job(path: Path) -> bool:
    """`path` was written by an earlier attempt of this SLURM job (a requeue: same job, higher
    restart count), so this attempt is a continuation, not a new run."""
    now = attempt_identity()
    if now is None:
        return False
    written = (read_record(path) or {}).get("attempt") or {}
    return written.get("slurm_job") == now["slurm_job"] and int(written.get("restart", 0)) < now["restart"]


def read_record(path: str | Path, checkpoint: dict | None = None) -> dict[str, Any] | None:
    """The TrainingRecord entry of a checkpoint (None for one written without it)."""
    if checkpoint is None:
        try:
            checkpoint = torch.load(Path(path), map_location="cpu", weights_only=False, mmap=True)
        except (OSError, RuntimeError, EOFError):
            return None
    record = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return record if isinstance(record, dict) else None


def completed_epochs(checkpoint: dict) -> int:
    """Epochs the checkpoint's fit had completed."""
    with contextlib.suppress(KeyError, TypeError):
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"])
    return int(checkpoint.get("epoch", -1)) + 1


def setting_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """`key: old -> new` for every setting that differs (dotted keys; `ignore`d ones left out)."""
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        before, after = a.get(key, "<unset>"), b.get(key, "<unset>")
        if before != after:
            lines.append(f"{key}: {before!r} -> {after!r}")
    return lines


def check_settings(path: str, checkpoint: dict, settings: dict, own: bool, epochs: int) -> None:
    """Refuse to resume `checkpoint` under other training settings than it was trained with.

    The run directory's own last.ckpt must match exactly (a resumed run equals an uninterrupted one).
    An explicit trainer.ckpt_path may continue for more epochs (strategy.epochs larger than the
    epochs it completed); every other setting must match."""
    record = read_record(path, checkpoint)
    done = completed_epochs(checkpoint)
    if not own and done >= epochs:
        raise ConfigError(
            f"trainer.ckpt_path={path} has completed {done} epochs and strategy.epochs={epochs}: nothing would "
            "be trained, and the result would be that checkpoint's under this run's settings. Set "
            f"strategy.epochs above {done} to continue it, or leave trainer.ckpt_path out for a fresh run"
        )
    if record is None or not isinstance(record.get("settings"), dict):
        log.warning(
            "checkpoint %s does not record its training settings (written by an older tlbench): "
            "cannot check that it was trained with this run's settings",
            path,
        )
        return
    differences = setting_differences(record["settings"], settings, ignore=() if own else ("strategy.epochs",))
    if not differences:
        if not own and record["settings"].get("strategy", {}).get("epochs") != epochs:
            log.warning(
                "continuing %s (trained for %s epochs) to strategy.epochs=%d: the LR schedule of the remaining "
                "epochs follows the new length",
                path,
                record["settings"].get("strategy", {}).get("epochs"),
                epochs,
            )
        return
    where = "this run directory's checkpoint " if own else "trainer.ckpt_path="
    fix = (
        "Rerun with the settings it was made with to continue it, pass overwrite=true to start this run "
        "directory afresh (its checkpoints are removed), or choose another run directory (hydra.run.dir=...)"
        if own
        else "Resume it with the settings it was made with (strategy.epochs may be larger), or leave "
        "trainer.ckpt_path out for a fresh run"
    )
    raise ConfigError(
        f"{where}{path} was trained with other settings than this run's, so resuming would continue the old "
        f"training under the new record. Differences (checkpoint -> now): {'; '.join(differences)}. {fix}"
    )


class TrainingRecord(pl.Callback):
    """Writes into every checkpoint the training settings, the attempt that wrote it, and the
    training time so far summed over the attempts (restored on resume)."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = settings or {}
        self.attempt = attempt_identity()
        self.earlier_seconds = 0.0  # training time of the attempts before this one
        self.earlier_attempts = 0
        self._started: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def this_attempt_seconds(self) -> float:
        return 0.0 if self._started is None else time.perf_counter() - self._started

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "settings": self.settings,
            "attempt": self.attempt,
            "fit_seconds": self.earlier_seconds + self.this_attempt_seconds(),
            "attempts": self.earlier_attempts + 1,
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        record = read_record("", checkpoint) or {}
        self.earlier_seconds = float(record.get("fit_seconds", 0.0))
        self.earlier_attempts = int(record.get("attempts", 1 if checkpoint else 0))


def set_aside_mid_epoch_checkpoints(run_dir: Path) -> None:
    """Every rank calls this; whichever renames a file first wins, the others find it gone."""
    aside = run_dir / "checkpoints" / "mid_epoch"
    for path in sorted(run_dir.glob("hpc_ckpt_*.ckpt")):
        aside.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, aside / path.name)
            log.info("set aside the mid-epoch checkpoint %s (resuming at an epoch boundary)", path.name)


def _first_process() -> bool:
    """Rank 0 by the launcher's variables; Lightning's own DDP children carry LOCAL_RANK (and on other
    nodes NODE_RANK) > 0."""
    return process_rank() == 0 and all(os.environ.get(v, "0") in ("", "0") for v in ("LOCAL_RANK", "NODE_RANK"))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.expanduser().resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
