"""A finished run directory stays exactly as it was.

A run directory with results.json holds a finished result; running into it again is refused unless
overwrite=true (a requeued SLURM job that had already finished stops quietly instead). Hydra writes
.hydra/config.yaml, hydra.yaml, overrides.yaml and appends to tlbench.log *before* the task
function runs, so a refusal made inside run() comes too late: those files would describe a run
that never happened, beside the old results.json. This Hydra callback therefore refuses before
Hydra writes anything (a single run), and in a multirun, where the job directories are only known
per job, puts back what Hydra rewrote in a finished job directory whose result was not replaced.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tlbench.errors import ConfigError, RunFinished
from tlbench.results import RESULTS_FILE


def check_not_finished(run_dir: Path, overwrite: bool) -> None:
    """A finished result is never replaced silently. A requeued SLURM job that had already written it
    (killed after the end) stops quietly; anything else is refused unless overwrite=true."""
    done = Path(run_dir) / RESULTS_FILE
    if not done.is_file():
        return
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if requeued and (not overwrite or _written_by_this_job(done)):
        # with overwrite=true only this job's own result counts as done: an older run's is replaced
        raise RunFinished(f"{run_dir} already holds the result of this job ({RESULTS_FILE}); nothing to do")
    if overwrite:
        return
    raise ConfigError(
        f"{done} already exists: this run directory holds a finished result. Choose another directory "
        "(hydra.run.dir=...), or pass overwrite=true to run again and replace it"
    )


def _written_by_this_job(results: Path) -> bool:
    """results.json records the SLURM job that wrote it (provenance.slurm.job_id)."""
    try:
        written = json.loads(results.read_text())["provenance"]["slurm"]["job_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return str(written) == os.environ.get("SLURM_JOB_ID")


class _Snapshot:
    """The bytes of a finished job directory's small files (not its results), to put back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.result = _stamp(folder / RESULTS_FILE)
        self.files = {p: p.read_bytes() for p in sorted(folder.glob(".hydra/*")) if p.is_file()}
        self.logs = {p: p.stat().st_size for p in folder.glob("*.log") if p.is_file()}
        self.names = {p.name for p in folder.iterdir()}

    def restore_if_unreplaced(self) -> bool:
        if _stamp(self.folder / RESULTS_FILE) != self.result:
            return False  # overwrite=true replaced the result: the new files describe it
        for path, data in self.files.items():
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
        for path in self.folder.glob(".hydra/*"):
            if path not in self.files and path.is_file():
                path.unlink()
        for path in self.folder.glob("*.log"):
            size = self.logs.get(path)
            if size is None:
                path.unlink()
            elif path.stat().st_size != size:
                os.truncate(path, size)
        for path in self.folder.iterdir():  # e.g. failure.json of the refusal
            if path.name not in self.names and path.is_file():
                path.unlink()
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


class ProtectFinishedRuns(Callback):
    """Registered in conf/config.yaml (hydra.callbacks)."""

    def __init__(self) -> None:
        self._snapshots: dict[Path, _Snapshot] = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(config.hydra.run.dir))
            overwrite = bool(config.get("overwrite", False))
        except Exception:  # an unresolvable value: run() reports it with its fix
            return
        try:
            check_not_finished(run_dir, overwrite)
        except RunFinished as done:
            print(f"tlbench: {done}", file=sys.stderr)
            raise SystemExit(0) from None
        except ConfigError as exc:
            print(f"tlbench: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # likewise
            return
        if sweep_dir.is_dir():
            for done in sweep_dir.glob(f"*/{RESULTS_FILE}"):
                self._snapshots[done.parent.resolve()] = _Snapshot(done.parent)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        snapshot = self._snapshots.pop(Path(str(config.hydra.runtime.output_dir)).resolve(), None)
        if snapshot is not None:  # (nothing logged: the job's log file is one of those restored)
            snapshot.restore_if_unreplaced()
