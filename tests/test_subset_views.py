"""Subsets are views of the cache: a few-shot draw (dataset.train_per_class, few_shot_seed) and a
validation holdout (dataset.val_fraction) select rows of the extracted source split, so a sweep over
k and seeds runs one extraction per split; results.json and subsets.npz record which rows. And the
analyses of a real run: their files, and a few-shot point equal to the run with that k and seed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import colour_folder, read_json, run_cli
from test_run_wiring import SMALL, compose_cfg

from tlbench.data.subsets import SUBSETS_FILE, per_class_subset
from tlbench.embedding import extractor
from tlbench.embedding.store import FeatureSet
from tlbench.embedding.views import row_view
from tlbench.predictions import read_predictions
from tlbench.results import read_results
from tlbench.run import run


@pytest.fixture
def folder(tmp_path):
    return colour_folder(tmp_path / "folder", train=6, test=3)


@pytest.fixture
def forward_images(monkeypatch):
    """Images through the network, per call of predict_step (a forward pass of one batch)."""
    seen: list[int] = []
    original = extractor.FeatureExtractor.predict_step

    def counting(self, batch, *args, **kwargs):
        seen.append(len(batch["label"]))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(extractor.FeatureExtractor, "predict_step", counting)
    return seen


def test_a_sweep_over_k_and_seeds_extracts_each_split_once(tmp_path, folder, forward_images):
    results = {}
    for k in (1, 2):
        for seed in (0, 1):
            cfg = compose_cfg(
                tmp_path, folder, "strategy=last_layer", f"dataset.train_per_class={k}", f"dataset.few_shot_seed={seed}"
            )
            results[k, seed] = run(cfg, tmp_path / f"k{k}_s{seed}")
    assert sum(forward_images) == 18 + 9, "every train and test image once, for the whole sweep"
    assert results[1, 0].cache == {"train": "miss", "test": "miss"}
    full_labels = np.repeat([0, 1, 2], 6)  # imagefolder lists classes, then files, in sorted order
    for (k, seed), result in results.items():
        if (k, seed) != (1, 0):
            assert result.cache == {"train": "hit", "test": "hit"}
        record = read_results(tmp_path / f"k{k}_s{seed}")["subsets"]["train"]
        assert record["source"] == "train" and record["rows"] == 3 * k == result.split_sizes["train"]
        assert (record["train_per_class"], record["few_shot_seed"]) == (k, seed)
        rows = np.load(tmp_path / f"k{k}_s{seed}" / SUBSETS_FILE)["train"]
        assert np.array_equal(rows, per_class_subset(full_labels, k, seed))
    assert not np.array_equal(
        np.load(tmp_path / "k2_s0" / SUBSETS_FILE)["train"], np.load(tmp_path / "k2_s1" / SUBSETS_FILE)["train"]
    ), "another seed draws other rows"


def test_a_validation_holdout_is_rows_of_the_one_train_extraction(tmp_path, folder, forward_images):
    vals = []
    for k in (1, 2):
        cfg = compose_cfg(
            tmp_path, folder, "strategy=last_layer", "dataset.val_fraction=0.34", f"dataset.train_per_class={k}"
        )
        result = run(cfg, tmp_path / f"k{k}")
        assert set(result.metrics) == {"val", "test"}
        vals.append(np.load(tmp_path / f"k{k}" / SUBSETS_FILE)["val"])
        assert result.subsets["val"]["val_fraction"] == 0.34
        assert not set(vals[-1]) & set(np.load(tmp_path / f"k{k}" / SUBSETS_FILE)["train"]), "no image in both"
    assert np.array_equal(vals[0], vals[1]), "val is drawn before the few-shot subset: the same for every k"
    assert sum(forward_images) == 18 + 9


def test_row_view_maps_rows_and_skipped_images_into_the_subset():
    source = FeatureSet(
        features=np.arange(8, dtype=np.float32).reshape(4, 2),
        labels=np.array([0, 1, 1, 0]),
        indices=np.array([0, 1, 3, 4]),  # image 2 was undecodable
        skipped=[2],
        layout=[("t", 2)],
        entry_id="abc",
    )
    view = row_view(source, np.array([1, 2, 4]))
    assert view.indices.tolist() == [0, 2] and view.skipped == [1]  # positions in the subset
    assert view.features.tolist() == [[2, 3], [6, 7]] and view.labels.tolist() == [1, 0]
    assert view.entry_id.startswith("abc+rows:") and view.entry_id != row_view(source, np.array([1, 4])).entry_id
    assert row_view(source, np.arange(5)) is source, "every row: the source itself, nothing copied"


def test_analyses_of_a_run_and_a_few_shot_point_equal_to_the_run_with_that_draw(tmp_path, folder, forward_images):
    shots = "analysis.few_shot.shots=[1,2,null]"
    cfg = compose_cfg(tmp_path, folder, "analysis=[layer_curve,few_shot]", shots, "analysis.few_shot.seeds=[0,1]")
    result = run(cfg, tmp_path / "run")
    out = tmp_path / "run" / "analysis"
    for name in ("layer_curve", "few_shot"):
        for suffix in ("json", "csv", "png"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    curve = result.analyses["layer_curve"]
    assert [r["kind"] for r in curve["rows"]].count("layer") == len(result.taps) > 2
    assert curve["rows"][-1]["kind"] == "full" and curve["rows"][-1]["test"] == result.metrics["test"]
    assert read_results(tmp_path / "run")["analyses"]["few_shot"]["protocol"]["seeds"] == [0, 1]
    predictions = read_predictions(tmp_path / "run")["test"]
    assert len(predictions.labels) == 9
    assert np.mean(predictions.labels == predictions.predictions) == pytest.approx(result.metrics["test"]["top1"])
    points = {(p["method"], p["label"]): p for p in result.analyses["few_shot"]["points"]}
    assert points["fne", "all"]["values"] == [result.metrics["test"]["top1"]]

    # the point (fne, k=2, seed 1) is what the run with that draw measures, from the same extraction
    single = run(compose_cfg(tmp_path, folder, "dataset.train_per_class=2", "dataset.few_shot_seed=1"), tmp_path / "k2")
    assert single.cache == {"train": "hit", "test": "hit"}
    assert points["fne", "2"]["values"][1] == pytest.approx(single.metrics["test"]["top1"])
    assert sum(forward_images) == 18 + 9


def test_analyses_run_as_a_hydra_multirun_from_one_extraction(tmp_path, folder):
    sweep = tmp_path / "sweep"
    run_cli(
        tmp_path,
        "-m",
        "analysis=layer_curve,few_shot",  # each job its own analysis, at its defaults
        "dataset=imagefolder",
        f"dataset.root={folder}",
        *SMALL,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = [read_json(sweep / str(i) / "results.json") for i in (0, 1)]
    assert [set(job["analyses"]) for job in jobs] == [{"layer_curve"}, {"few_shot"}]
    assert jobs[0]["cache"] == {"train": "miss", "test": "miss"} and jobs[1]["cache"] == {"train": "hit", "test": "hit"}
    assert (sweep / "0" / "analysis" / "layer_curve.png").is_file()
    assert (sweep / "1" / "analysis" / "few_shot.csv").read_text().startswith("method,")
