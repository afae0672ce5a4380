"""A finished run directory stays exactly as it was when a rerun into it is refused (issue 13, item 4):
Hydra used to rewrite .hydra/config.yaml, hydra.yaml and overrides.yaml (and append to tlbench.log)
before tlbench refused, leaving files that describe a run that never happened beside the old result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

RESULT = {"headline_metric": "top1", "metrics": {"test": {"top1": 0.5, "mean_per_class": 0.5}}}


def _finished_run(folder: Path) -> dict[Path, bytes]:
    """A run directory as a finished run leaves it; returns every file's bytes."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\nclassifier:\n  C: 1.0\n")
    (folder / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: RUN\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- strategy=last_layer\n")
    (folder / "tlbench.log").write_text("[earlier run] finished\n")
    (folder / "results.json").write_text(json.dumps(RESULT))
    return _contents(folder)


def _contents(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_refused_rerun_leaves_the_finished_run_directory_unchanged(tmp_path: Path) -> None:
    before = _finished_run(tmp_path / "run")
    proc = run_cli(tmp_path, "strategy=fne", "classifier.C=10", check=False, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "holds a finished result" in proc.stderr and "overwrite=true" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _contents(tmp_path / "run") == before


@pytest.mark.slow
def test_requeued_finished_job_exits_quietly_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    before = _finished_run(tmp_path / "run")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    proc = run_cli(tmp_path, "strategy=last_layer", check=False, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr
    assert _contents(tmp_path / "run") == before


@pytest.mark.slow
def test_multirun_into_a_sweep_with_a_finished_job_restores_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    before = _finished_run(sweep / "0")
    # job 0 is refused (finished), job 1 fails fast on its missing root: neither extracts
    proc = run_cli(
        tmp_path,
        "-m",
        f"hydra.sweep.dir={sweep}",
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'a'},{tmp_path / 'b'}",
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # the failed job 1
    assert "holds a finished result" in proc.stderr + proc.stdout
    assert _contents(sweep / "0") == before
    assert (sweep / "1" / "failure.json").is_file()
    assert "50.00 % top1" in proc.stdout  # the summary still shows job 0's own result


def test_sweep_summary_survives_a_damaged_results_file(tmp_path: Path) -> None:
    from tlbench.sweep import job_outcomes

    _finished_run(tmp_path / "0")
    (tmp_path / "0" / "results.json").write_text('{"truncated": ')
    (row,) = job_outcomes(tmp_path)
    assert row["status"] == "unreadable result" and "results.json" in row["error"]


@pytest.mark.parametrize(("writer", "stops"), [("4242", True), ("17", False)])
def test_requeued_overwrite_job_does_not_redo_its_own_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, stops: bool
) -> None:
    """overwrite=true replaces an older run's result, but a requeue of the job that wrote it (killed
    after the end) stops quietly instead of running again."""
    from tlbench.errors import RunFinished
    from tlbench.finished_run import check_not_finished

    (tmp_path / "results.json").write_text(json.dumps({**RESULT, "provenance": {"slurm": {"job_id": writer}}}))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    if stops:
        with pytest.raises(RunFinished):
            check_not_finished(tmp_path, overwrite=True)
    else:
        check_not_finished(tmp_path, overwrite=True)
