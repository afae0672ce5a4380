"""The real default job through the CLI: FNE on digits with packaged ImageNet weights, offline.

The runs share one feature cache (module scope), in order: first run (extracts), rerun (cache
hit), last_layer baseline, then a local multirun that reuses both extractions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import read_json, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def first_run(workdir):
    proc = run_cli(workdir, "hydra.run.dir=" + str(workdir / "run1"))
    return proc, read_json(workdir / "run1" / "results.json")


def test_default_job_is_fne_on_digits_and_accurate(first_run, workdir):
    proc, result = first_run
    assert (result["dataset"], result["model"], result["strategy"]) == ("digits", "efficientnet_lite0", "fne")
    assert result["metrics"]["test"]["top1"] >= 0.97
    assert result["metrics"]["test"]["mean_per_class"] >= 0.97
    assert result["split_sizes"] == {"train": 1257, "test": 540}
    assert result["cache"] == {"train": "miss", "test": "miss"}
    assert result["feature_dim"] == sum(d for _, d in result["layout"]) > 10_000
    assert result["postprocess"]["discretize"] is True
    assert result["postprocess"]["thresholds"] == {"negative": -0.25, "positive": 0.15}
    assert set(result["postprocess"]["train_value_fractions"]) == {"-1", "0", "1"}
    assert result["classifier"]["C"] == 1.0
    assert result["backbone"]["weights_id"].startswith("sha256:")
    assert set(result["timings"]) == {"extract", "extract_images_per_s", "fit", "evaluate", "total"}
    assert result["timings"]["extract_images_per_s"] == pytest.approx(1797 / result["timings"]["extract"], rel=0.01)
    assert result["postprocess"]["dtype"] == "int8" and result["postprocess"]["bytes_per_feature"] == 1
    assert result["postprocess"]["train_matrix_bytes"] == 1257 * result["feature_dim"]
    assert result["skipped_files"] == {}
    assert result["config"]["dataset"]["name"] == "digits"
    assert result["provenance"]["packages"]["torch"]
    assert result["provenance"]["host"]["hostname"]
    assert "commit" in result["provenance"]["git"]
    # the console table and the CSV logger
    assert "top-1 %" in proc.stdout and "digits" in proc.stdout
    rows = list(csv.DictReader((workdir / "run1" / "csv" / "metrics.csv").open()))
    assert float(rows[-1]["test/top1"]) == pytest.approx(result["metrics"]["test"]["top1"])


def test_rerun_hits_the_cache_with_identical_numbers(first_run, workdir):
    _, first = first_run
    proc = run_cli(workdir, "hydra.run.dir=" + str(workdir / "run2"))
    second = read_json(workdir / "run2" / "results.json")
    assert second["cache"] == {"train": "hit", "test": "hit"}
    assert "extract_images_per_s" not in second["timings"]  # nothing was extracted
    assert (first["postprocess"]["cache"], second["postprocess"]["cache"]) == ("miss", "hit")  # int8 FNE inputs
    assert "cache hit" in proc.stdout + proc.stderr
    assert second["metrics"] == first["metrics"]
    assert second["timings"]["extract"] < first["timings"]["extract"] / 5


def test_last_layer_baseline_is_clearly_below_fne(first_run, workdir):
    _, fne = first_run
    run_cli(workdir, "strategy=last_layer", "hydra.run.dir=" + str(workdir / "run3"))
    last = read_json(workdir / "run3" / "results.json")
    assert last["strategy"] == "last_layer"
    assert last["taps"] == ["classifier:input"]
    assert last["feature_dim"] == 1280
    assert last["metrics"]["test"]["top1"] < fne["metrics"]["test"]["top1"] - 0.03


def test_local_multirun_sweeps_strategy_and_C_reusing_extractions(first_run, workdir):
    sweep = workdir / "sweep"
    run_cli(workdir, "-m", "strategy=last_layer,fne", "classifier.C=0.1,10", f"hydra.sweep.dir={sweep}")
    results = [read_json(p) for p in sorted(sweep.glob("*/results.json"))]
    assert len(results) == 4
    assert sorted((r["strategy"], r["classifier"]["C"]) for r in results) == [
        ("fne", 0.1), ("fne", 10.0), ("last_layer", 0.1), ("last_layer", 10.0),
    ]  # fmt: skip
    assert all(r["cache"] == {"train": "hit", "test": "hit"} for r in results)


def test_vgg16_fne_from_a_weights_file_on_an_image_folder(image_folder, tmp_path):
    """The issue's example: model=vgg16 model.weights=PATH strategy=fne dataset=imagefolder."""
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), weights)
    run_cli(
        tmp_path,
        "model=vgg16",
        f"model.weights={weights}",
        "strategy=fne",
        "dataset=imagefolder",
        f"dataset.root={image_folder}",
        "dataset.num_workers=0",
        "dataset.batch_size=9",
        "logger=none",
    )
    result = read_json(tmp_path / "run" / "results.json")
    assert result["feature_dim"] == 12_416
    assert len(result["taps"]) == 15 and result["taps"][-1] == "classifier.4"
    assert result["split_sizes"] == {"train": 18, "test": 9}
    assert result["backbone"]["weights_id"].startswith("sha256:")
    assert result["backbone"]["data_config"]["interpolation"] == "bilinear"
    assert not (tmp_path / "run" / "csv").exists()  # logger=none
