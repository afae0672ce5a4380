"""logger=wandb, offline (there is no W&B cloud here): what the runs wrote is read back from their
.wandb files (tests/wandb_records.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import colour_folder, read_json, run_cli
from wandb_records import run_summary

pytestmark = pytest.mark.slow
TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false", "logger=wandb"]


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No API key and no ~/.netrc: W&B must fall back to offline by itself, without hanging."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()


@pytest.fixture
def folder(tmp_path) -> Path:
    return colour_folder(tmp_path / "folder", train=4, test=2)


def wandb_file(run_dir: Path, index: int = -1) -> Path:
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {run_dir}"
    return files[index]


def test_multirun_jobs_are_separate_wandb_runs_in_one_group(tmp_path, folder, no_credentials):
    proc = run_cli(tmp_path, "-m", "dataset=imagefolder", f"dataset.root={folder}", *TINY, "strategy=last_layer,fne")
    assert "W&B runs offline: no W&B API key" in proc.stdout + proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    runs = []
    for job in ("0", "1"):
        result = read_json(sweep / job / "results.json")
        info = run_summary(wandb_file(sweep / job))
        assert info["summary"]["test/top1"] == pytest.approx(result["metrics"]["test"]["top1"])
        assert info["config"]["dataset"]["name"] == "imagefolder"
        assert info["config"]["model"]["name"] == "resnet18"
        assert info["config"]["strategy"]["name"] == result["strategy"]
        assert info["job_type"] == result["strategy"]
        assert sorted(info["tags"]) == sorted(["imagefolder", "resnet18", result["strategy"]])
        assert f"strategy={result['strategy']}" in info["name"]
        assert info["id"] == (sweep / job / "wandb_run_id").read_text().strip()
        runs.append(info)
    assert runs[0]["id"] != runs[1]["id"]  # wandb.finish() between jobs: two runs
    assert runs[0]["group"] == runs[1]["group"] == f"sweep-{sweep.name}"


def test_finetuning_logs_curves_and_a_rerun_continues_the_same_wandb_run(tmp_path, folder, no_credentials):
    overrides = ["dataset=imagefolder", f"dataset.root={folder}", *TINY, "strategy=finetune", "strategy.epochs=2"]
    overrides += ["dataset.val_fraction=0.5", "logger.offline=true"]
    run_cli(tmp_path, *overrides)
    run_dir = tmp_path / "run"
    info = run_summary(wandb_file(run_dir))
    # one point per epoch from Lightning, then the final value of the evaluated checkpoint
    assert len(info["history"]["val/top1"]) == 3
    result = read_json(run_dir / "results.json")
    assert info["summary"]["test/top1"] == pytest.approx(result["metrics"]["test"]["top1"])
    assert info["summary"]["val/top1"] == pytest.approx(result["metrics"]["val"]["top1"])
    first_id = (run_dir / "wandb_run_id").read_text().strip()

    run_cli(tmp_path, *overrides, "overwrite=true")  # as a requeued job would: same run directory
    again = run_summary(wandb_file(run_dir))
    assert (run_dir / "wandb_run_id").read_text().strip() == first_id == again["id"] == info["id"]
