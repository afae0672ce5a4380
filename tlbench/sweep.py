"""Multirun sweeps: a failing job is recorded and the sweep goes on; the sweep ends with a summary.

Each job writes results.json (success) or failure.json (the error) in its own directory. The summary
reads those files back from the sweep directory, so it works the same for local jobs and for jobs
that ran on SLURM through the submitit launcher (where a killed job leaves neither).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tlbench.results import RESULTS_FILE

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
SUMMARY_FILE = "sweep_summary.json"
# Failed jobs of the sweeps that ended in this process; the CLI exits non-zero when there are any.
failed_jobs: list[str] = []


def write_failure(run_dir: Path, error: BaseException) -> Path:
    """Record why a job failed (the message a user acts on, and the traceback for a bug)."""
    path = run_dir / FAILURE_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "error": str(error),
        "type": type(error).__name__,
        "traceback": "".join(traceback.format_exception(error)),
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def job_outcomes(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder (those with .hydra/overrides.yaml), in job-number order."""
    rows = []
    folders = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    for folder in sorted(folders, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        overrides = " ".join(OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "overrides.yaml")))
        row: dict[str, Any] = {"job": folder.name, "overrides": overrides, "dir": str(folder)}
        if (folder / FAILURE_FILE).is_file():  # also after results.json, e.g. when logging failed
            row.update(status="failed", error=json.loads((folder / FAILURE_FILE).read_text())["error"])
        elif (folder / RESULTS_FILE).is_file():
            try:
                result = json.loads((folder / RESULTS_FILE).read_text())
                metric = result["headline_metric"]
                row.update(status="ok", metric=metric, value=result["metrics"]["test"][metric])
            except (ValueError, KeyError, TypeError) as exc:  # a damaged or foreign file: say so, go on
                row.update(status="unreadable result", error=f"{folder / RESULTS_FILE}: {exc!r}")
        else:
            row.update(status="no result", error="neither results.json nor failure.json (killed, or still running)")
        rows.append(row)
    return rows


class SweepSummary(Callback):
    """Prints and saves what succeeded and what failed when a multirun ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console  # here: every tlbench start loads this callback, few print a sweep
        from rich.table import Table

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        rows = job_outcomes(sweep_dir)
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(rows, indent=2))
        failed = [row for row in rows if row["status"] != "ok"]
        failed_jobs.extend(row["dir"] for row in failed)
        table = Table(title=f"sweep {sweep_dir}: {len(rows) - len(failed)} succeeded, {len(failed)} failed")
        for column in ("job", "overrides (those that differ)", "status", "test"):
            table.add_column(column)
        common = set.intersection(*(set(row["overrides"].split()) for row in rows)) if rows else set()
        for row in rows:
            varying = " ".join(o for o in row["overrides"].split() if o not in common) or "(none)"
            outcome = f"{100 * row['value']:.2f} % {row['metric']}" if row["status"] == "ok" else row["error"]
            table.add_row(row["job"], varying, row["status"], outcome)
        Console(stderr=False).print(table)
        log.info("sweep summary: %s", sweep_dir / SUMMARY_FILE)
