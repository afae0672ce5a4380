"""Analyses on one extraction's features (tlbench/analysis/): each layer-curve point equals fitting
that layer by hand, each few-shot point equals fitting that draw by hand (and a run with
dataset.train_per_class=k few_shot_seed=s), intervals and paired tests are the tlbench.stats ones,
and bad settings are refused before the extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlbench.analysis.few_shot import few_shot_curve, resolve_methods
from tlbench.analysis.layer_curve import layer_curve
from tlbench.analysis.probe import fit_probe
from tlbench.analysis.runner import check_analyses
from tlbench.classifiers import LinearSVM
from tlbench.data.subsets import per_class_subset
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.store import FeatureSet
from tlbench.errors import ConfigError
from tlbench.metrics import classification_metrics
from tlbench.stats import mean_interval, paired_test

FNE = {"standardize": True, "discretize": True, "negative": -0.25, "positive": 0.15, "l2_normalize": None}
L2 = {"standardize": False, "discretize": False, "l2_normalize": "image"}
LAYOUT = [("conv1", 5), ("conv2", 8), ("fc", 12)]
CLASSES = ["a", "b", "c"]


def make_svm() -> LinearSVM:
    return LinearSVM(C=1.0, backend="torch", max_iter=2000)


def synthetic(n_train: int = 60, n_test: int = 45, seed: int = 0) -> dict[str, FeatureSet]:
    """Three classes; the deeper the tap, the more its columns tell them apart."""
    rng = np.random.default_rng(seed)
    dim = sum(w for _, w in LAYOUT)
    signal = np.concatenate([np.full(w, s) for (_, w), s in zip(LAYOUT, (0.2, 0.6, 1.5))])
    centers = rng.normal(size=(3, dim)) * signal
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 3
        x = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
        out[split] = FeatureSet(x, labels.astype(np.int64), np.arange(n, dtype=np.int64), [], list(LAYOUT))
    return out


def by_hand(features, columns, postprocess, rows=None):
    """Post-processing fitted on the train rows of these columns, the SVM fitted on them: test metrics."""
    train = features["train"]
    x_train = train.features[:, columns] if rows is None else train.features[rows][:, columns]
    y_train = train.labels if rows is None else train.labels[rows]
    post = FeaturePostprocess(**postprocess).fit(np.ascontiguousarray(x_train))
    svm = make_svm().fit(post.transform(np.ascontiguousarray(x_train)), y_train)
    predictions = svm.predict(post.transform(np.ascontiguousarray(features["test"].features[:, columns])))
    return classification_metrics(features["test"].labels, predictions, 3)


def whole_fit(features, postprocess):
    post = FeaturePostprocess(**postprocess).fit(features["train"].features, features["train"].layout)
    inputs = {s: post.transform(fs.features) for s, fs in features.items()}
    return inputs, fit_probe(features, make_svm, 3, inputs=inputs)


@pytest.mark.parametrize("postprocess", [FNE, L2], ids=["fne-columnwise", "l2-image-refit"])
def test_each_layer_point_equals_fitting_that_layer_by_hand(postprocess):
    features = synthetic()
    inputs, whole = whole_fit(features, postprocess)
    record = layer_curve(features, inputs, whole, postprocess, make_svm, "top1", 3, cumulative=True, resamples=200)
    layers = [r for r in record["rows"] if r["kind"] == "layer"]
    prefixes = [r for r in record["rows"] if r["kind"] == "prefix"]
    full = [r for r in record["rows"] if r["kind"] == "full"]
    assert [r["tap"] for r in layers] == [t for t, _ in LAYOUT] and [r["depth"] for r in layers] == [1, 2, 3]
    start = 0
    for row, (_, width) in zip(layers, LAYOUT):
        assert row["test"] == by_hand(features, slice(start, start + width), postprocess), row["tap"]
        assert row["dim"] == width and row["low"] <= row["test"]["top1"] <= row["high"]
        start += width
    assert [r["depth"] for r in prefixes] == [2]  # layers 1..2; 1..3 is the whole embedding
    assert prefixes[0]["test"] == by_hand(features, slice(0, 13), postprocess)
    assert full[0]["test"] == whole.metrics["test"] and full[0]["dim"] == 25
    assert record["last_tap"] == "fc"
    assert layers[2]["test"]["top1"] > layers[0]["test"]["top1"], "the synthetic signal grows with depth"
    versus_last = record["comparisons"][0]
    assert versus_last["b"] == "last layer"
    assert versus_last["difference"] == pytest.approx(full[0]["test"]["top1"] - layers[2]["test"]["top1"])
    assert 0 <= versus_last["p_value"] <= 1 and versus_last["low"] <= versus_last["difference"] <= versus_last["high"]
    assert "bootstrap" in record["protocol"]["interval"]


def test_each_few_shot_point_equals_fitting_that_draw_by_hand():
    features = synthetic(n_train=90)
    methods = resolve_methods(["fne", "last_layer", "layer:conv2"], LAYOUT, FNE, L2)
    seeds = [0, 1, 2]
    shots = [2, 5, None]
    record = few_shot_curve(features, methods, shots, seeds, make_svm, "mean_per_class", 3, CLASSES, resamples=200)
    points = {(p["method"], p["label"]): p for p in record["points"]}
    assert len(points) == 9
    columns = {"fne": slice(0, 25), "last_layer": slice(13, 25), "layer:conv2": slice(5, 13)}
    posts = {"fne": FNE, "last_layer": L2, "layer:conv2": FNE}
    for name in columns:
        for k in (2, 5):
            point = points[(name, str(k))]
            draws = [per_class_subset(features["train"].labels, k, s) for s in seeds]
            expected = [by_hand(features, columns[name], posts[name], rows)["mean_per_class"] for rows in draws]
            assert point["values"] == expected, (name, k)
            interval = mean_interval(expected)
            assert (point["mean"], point["low"], point["high"]) == (interval["mean"], interval["low"], interval["high"])
            assert point["per_class_train"] == k
        everything = points[(name, "all")]
        assert everything["values"] == [by_hand(features, columns[name], posts[name])["mean_per_class"]]
        assert everything["low"] <= everything["mean"] <= everything["high"]
        assert "bootstrap" in everything["interval"]
    compared = {(c["b"], c["label"]): c for c in record["comparisons"]}
    assert set(compared) == {(b, lab) for b in ("last_layer", "layer:conv2") for lab in ("2", "5", "all")}
    five = compared[("last_layer", "5")]
    expected = paired_test(points[("fne", "5")]["values"], points[("last_layer", "5")]["values"])
    assert five["p_value"] == expected["p_value"] and five["effect_size"] == expected["effect_size"]
    assert "McNemar" in compared[("last_layer", "all")]["method"]


def test_a_method_fit_on_all_rows_is_reused_not_refitted(monkeypatch):
    features = synthetic()
    _, whole = whole_fit(features, FNE)
    methods = resolve_methods(["fne"], LAYOUT, FNE, L2)
    calls = []
    import tlbench.analysis.few_shot as few_shot

    original = few_shot.fit_probe
    monkeypatch.setattr(few_shot, "fit_probe", lambda *a, **k: calls.append(1) or original(*a, **k))
    record = few_shot_curve(features, methods, [None], [0, 1], make_svm, "top1", 3, CLASSES, reuse={"fne": whole})
    assert calls == [] and record["points"][0]["values"] == [whole.metrics["test"]["top1"]]


@pytest.mark.parametrize(
    "settings,taps,few_shot_run,auto,match",
    [
        ({"layer_curve": {}}, ["penultimate"], False, False, "needs several taps"),
        ({"few_shot": {"methods": ["fne"], "shots": [1], "seeds": [0]}}, ["a", "b"], True, False, "train_per_class"),
        ({"few_shot": {"methods": ["fne"], "shots": [1, 5], "seeds": [0]}}, ["a", "b"], False, True, "C=auto"),
        ({"few_shot": {"methods": ["layer:x"], "shots": [1], "seeds": [0]}}, ["a", "b"], False, False, "layer:a"),
        ({"few_shot": {"methods": ["fne"], "shots": [0], "seeds": [0]}}, ["a", "b"], False, False, "shots"),
        ({"few_shot": {"methods": ["fne"], "shots": [1], "seeds": [0]}}, ["a"], False, False, "strategy=fne"),
        ({"few_shots": {}}, ["a", "b"], False, False, "unknown analysis few_shots"),
    ],
)
def test_settings_that_cannot_work_are_refused(settings, taps, few_shot_run, auto, match):
    with pytest.raises(ConfigError, match=match):
        check_analyses(settings, taps, "fne", few_shot_run=few_shot_run, c_auto_kfold=auto)


def test_records_are_plain_json():
    features = synthetic()
    inputs, whole = whole_fit(features, FNE)
    record = layer_curve(features, inputs, whole, FNE, make_svm, "top1", 3, resamples=100)
    assert json.loads(json.dumps(record))["rows"][0]["tap"] == "conv1"


def test_fine_tuning_with_an_analysis_is_refused_before_anything_is_built(tmp_path):
    from test_run_wiring import compose_cfg

    from tlbench.run import run

    cfg = compose_cfg(tmp_path, tmp_path / "no-such-folder", "strategy=finetune", "analysis=layer_curve")
    with pytest.raises(ConfigError, match="analysis=layer_curve fits probes on extracted features"):
        run(cfg, tmp_path / "run")


def test_a_k_above_every_class_is_one_draw_with_a_test_image_interval():
    features = synthetic()  # 20 training images per class
    methods = resolve_methods(["fne", "last_layer"], LAYOUT, FNE, L2)
    record = few_shot_curve(features, methods, [50], [0, 1, 2], make_svm, "top1", 3, CLASSES, resamples=100)
    point = record["points"][0]
    assert len(point["values"]) == 1 and "bootstrap" in point["interval"]
    assert point["low"] <= point["mean"] <= point["high"]
    assert "McNemar" in record["comparisons"][0]["method"], "one draw: compared on the test images"
