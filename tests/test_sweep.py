"""Local multirun sweeps: a failing job is recorded, the others run, and the sweep ends with a
summary (console table, sweep_summary.json, exit code 1 when a job failed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import colour_folder, read_json, run_cli

from tlbench.sweep import FAILURE_FILE, job_outcomes

TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false"]


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    root = colour_folder(tmp_path / "folder", train=4, test=2)
    proc = run_cli(
        tmp_path,
        "-m",
        "dataset=imagefolder",
        f"dataset.root={root}",
        *TINY,
        "strategy=last_layer",
        "strategy.layer=penultimate,no_such_module,fc",
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1  # the sweep ran to the end and reports the failure
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    # the jobs after the failing one ran
    assert (sweep / "0" / "results.json").is_file() and (sweep / "2" / "results.json").is_file()
    assert read_json(sweep / "2" / "results.json")["taps"] == ["fc"]
    failure = read_json(sweep / "1" / FAILURE_FILE)
    assert failure["type"] == "ConfigError" and "no_such_module" in failure["error"]
    assert not (sweep / "1" / "results.json").exists()
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [row["status"] for row in summary] == ["ok", "failed", "ok"]
    assert summary[1]["overrides"].endswith("strategy.layer=no_such_module")
    assert "2 succeeded, 1 failed" in proc.stdout
    assert "tlbench: error: unknown tap 'no_such_module'" in proc.stderr


def test_summary_lists_a_job_that_left_no_result(tmp_path: Path):
    for job, files in (("0", {"results.json": None}), ("1", {}), ("2", {FAILURE_FILE: None})):
        folder = tmp_path / job
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={job}\n")
        if "results.json" in files:
            result = {"headline_metric": "top1", "metrics": {"test": {"top1": 0.75}}}
            (folder / "results.json").write_text(json.dumps(result))
        if FAILURE_FILE in files:
            (folder / FAILURE_FILE).write_text(json.dumps({"error": "boom", "type": "ValueError"}))
    (tmp_path / ".submitit").mkdir()  # not a job folder
    rows = job_outcomes(tmp_path)
    assert [(r["job"], r["overrides"], r["status"]) for r in rows] == [
        ("0", "seed=0", "ok"),
        ("1", "seed=1", "no result"),
        ("2", "seed=2", "failed"),
    ]
    assert rows[0]["value"] == 0.75 and rows[2]["error"] == "boom"
