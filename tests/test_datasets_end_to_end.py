"""`tlbench dataset=<fixture> strategy=fne` through the CLI on real-layout fixtures."""

from __future__ import annotations

import pytest
from conftest import read_json, run_cli
from fixtures import flowers102, mit67

pytestmark = pytest.mark.slow
SMALL = ("model.data_config.input_size=[3,96,96]", "dataset.num_workers=0", "dataset.batch_size=16")


def test_fne_on_flowers102_fixture_with_its_official_val_split(tmp_path):
    root = flowers102.build(tmp_path / "flowers")
    run_cli(tmp_path, "dataset=flowers102", f"dataset.root={root}", "strategy=fne", *SMALL)
    result = read_json(tmp_path / "run" / "results.json")
    assert result["dataset"] == "flowers102"
    assert result["headline_metric"] == "mean_per_class"
    assert result["split_sizes"] == {"train": 8, "val": 8, "test": 12}
    assert set(result["metrics"]) == {"val", "test"}
    assert result["metrics"]["test"]["mean_per_class"] >= 0.75  # colour-coded classes
    assert result["skipped_files"] == {}


def test_fne_on_mit67_fixture_with_quirky_names_and_few_shot(tmp_path):
    root = mit67.build(tmp_path / "mit67")
    run_cli(tmp_path, "dataset=mit67", f"dataset.root={root}", "strategy=fne", "dataset.train_per_class=2", *SMALL)
    result = read_json(tmp_path / "run" / "results.json")
    assert result["dataset"] == "mit67" and result["headline_metric"] == "top1"
    assert result["split_sizes"]["train"] == 2 * result["num_classes"]  # the few-shot subset
    assert result["skipped_files"] == {}, "GIF data in _gif.jpg and odd names all decode"
    assert result["metrics"]["test"]["top1"] >= 0.5
