"""Transferability scores in the layer curve and in tlbench-report --scores: each layer's scores are
the scores of exactly the inputs its probe was fitted on, the correlations are scipy's Kendall tau of
the recorded values, the depth baseline stands beside them, and bad settings are refused."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from scipy.stats import kendalltau
from test_analysis import FNE, L2, LAYOUT, make_svm, synthetic, whole_fit

from tlbench.analysis.layer_curve import layer_curve
from tlbench.analysis.runner import check_analyses
from tlbench.analysis.transferability import SCORES, correlations, layer_scores, module_depth, picks
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.errors import ConfigError
from tlbench.report.cli import main as report_main
from tlbench.report.scores import score_report


@pytest.mark.parametrize("postprocess", [FNE, L2], ids=["fne-columnwise", "l2-image-refit"])
def test_each_layer_is_scored_on_its_probe_inputs(postprocess):
    features = synthetic()
    inputs, whole = whole_fit(features, postprocess)
    record = layer_curve(
        features, inputs, whole, postprocess, make_svm, "top1", 3, resamples=200, scores=SCORES, knn_k=5
    )
    train = features["train"]
    layers = [r for r in record["rows"] if r["kind"] == "layer"]
    start = 0
    for row, (name, width) in zip(layers, LAYOUT, strict=True):
        x = np.ascontiguousarray(train.features[:, start : start + width])
        post = FeaturePostprocess(**postprocess).fit(x, [(name, width)])  # fitted on this layer alone
        expected = layer_scores(post.transform(x), train.labels, SCORES, knn_k=5)
        assert row["scores"] == pytest.approx(expected, rel=1e-9), name
        start += width
    (full,) = [r for r in record["rows"] if r["kind"] == "full"]
    assert full["scores"] == pytest.approx(layer_scores(inputs["train"], train.labels, SCORES, knn_k=5), rel=1e-9)

    by_name = {c["predictor"]: c for c in record["score_correlations"]}
    assert list(by_name) == ["depth", *SCORES] and by_name["depth"]["baseline"]
    assert not any(by_name[s]["baseline"] for s in SCORES)
    accuracy = [r["test"]["top1"] for r in layers]
    for name in SCORES:
        values = [r["scores"][name] for r in layers]
        tau = kendalltau(values, accuracy).statistic
        if np.isfinite(tau):
            assert by_name[name]["kendall_tau"] == pytest.approx(tau, abs=1e-6)
        else:
            assert by_name[name]["kendall_tau"] is None
    upper = [i for i, a in enumerate(accuracy) if a >= np.median(accuracy)]
    by_upper = {c["predictor"]: c for c in record["score_correlations_upper"]}
    assert by_upper["depth"]["n"] == len(upper)
    picks = {p["predictor"]: p for p in record["score_picks"]}
    assert picks["depth"]["tap"] == LAYOUT[-1][0]  # the depth baseline picks the last layer
    for name in SCORES:
        values = [r["scores"][name] for r in layers]
        tau = kendalltau([values[i] for i in upper], [accuracy[i] for i in upper]).statistic
        if np.isfinite(tau):
            assert by_upper[name]["kendall_tau"] == pytest.approx(tau, abs=1e-6)
        chosen = int(np.argmax(values))
        assert picks[name]["tap"] == layers[chosen]["tap"]
        assert picks[name]["regret"] == pytest.approx(max(accuracy) - accuracy[chosen])
    assert record["protocol"]["scores"]["scores"] == list(SCORES)
    assert record["timings"]["scores"] > 0
    json.dumps(record)  # plain JSON


def test_the_signal_that_grows_with_depth_is_ranked_by_the_scores():
    """synthetic(): the deeper tap separates the classes more; LogME, the kNN and nearest-centroid
    accuracies must all rank the layers that way (a score that did not would be a broken score)."""
    features = synthetic(n_train=120, seed=3)
    train = features["train"]
    start, values = 0, []
    for _, width in LAYOUT:
        x = np.ascontiguousarray(train.features[:, start : start + width])
        values.append(layer_scores(x, train.labels, ["logme", "knn", "nearest_centroid"], knn_k=5))
        start += width
    for name in ("logme", "knn", "nearest_centroid"):
        assert values[0][name] < values[2][name], name


def test_correlations_equal_scipy_and_carry_an_interval():
    rng = np.random.default_rng(0)
    accuracy = rng.uniform(0.4, 0.9, 12)
    noisy = accuracy + rng.normal(0, 0.1, 12)
    rows = correlations({"depth": list(range(12)), "score": noisy.tolist()}, accuracy.tolist(), "depth", 500)
    for row, x in zip(rows, (np.arange(12), noisy), strict=True):
        expected = kendalltau(x, accuracy)
        assert row["kendall_tau"] == pytest.approx(expected.statistic, abs=1e-6)
        assert row["p_value"] == pytest.approx(expected.pvalue)
        assert row["low"] <= row["kendall_tau"] <= row["high"] and row["n"] == 12
    assert [r["baseline"] for r in rows] == [True, False]
    (flat,) = correlations({"flat": [1.0] * 5}, [0.1, 0.2, 0.3, 0.4, 0.5], "depth")
    assert flat["kendall_tau"] is None and flat["low"] is None  # a constant score ranks nothing


@pytest.mark.parametrize(
    "layer_settings, match",
    [
        ({"scores": ["logme", "leep"]}, "unknown score leep"),
        ({"scores": ["knn"], "knn": {"k": 0}}, "knn.k must be"),
        ({"scores": ["knn"], "knn": {"temperature": -1.0}}, "temperature must be > 0"),
    ],
)
def test_bad_score_settings_are_refused_before_the_extraction(layer_settings, match):
    with pytest.raises(ConfigError, match=match):
        check_analyses({"layer_curve": layer_settings}, ["a", "b"], "fne", few_shot_run=False, c_auto_kfold=False)


def _result(dataset, model, accuracy, logme, imagenet, classes=10, seed=0):
    full = {"kind": "full", "test": {"top1": accuracy}, "scores": {"logme": logme, "knn": accuracy / 2}}
    return {
        "dataset": dataset,
        "model": model,
        "strategy": "fne",
        "classifier": {"type": "linear_svm"},
        "seed": seed,
        "headline_metric": "top1",
        "num_classes": classes,
        "metrics": {"test": {"top1": accuracy, "mean_per_class": accuracy}},
        "backbone": {"imagenet_top1": imagenet},
        "analyses": {"layer_curve": {"rows": [full]}},
    }


def test_report_ranks_models_per_dataset_beside_imagenet_accuracy():
    results = [
        _result("pets", "a", 0.70, 1.0, 80.0),
        _result("pets", "b", 0.80, 0.5, 70.0),
        _result("pets", "c", 0.90, 2.0, 75.0),
        _result("pets", "c", 0.86, 2.2, 75.0, seed=1),  # seeds are averaged first: c = 0.88, 2.1
        _result("pets", "d", 0.60, 0.1, 60.0),
    ]
    report = score_report(results, resamples=200)
    rows = {(r["across"], r["predictor"]): r for r in report.rows}
    accuracy = [0.70, 0.80, 0.88, 0.60]
    assert rows[("models", "imagenet_top1")]["baseline"]
    assert rows[("models", "imagenet_top1")]["kendall_tau"] == pytest.approx(
        kendalltau([80.0, 70.0, 75.0, 60.0], accuracy).statistic
    )
    assert rows[("models", "logme")]["kendall_tau"] == pytest.approx(
        kendalltau([1.0, 0.5, 2.1, 0.1], accuracy).statistic
    )
    assert rows[("models", "logme")]["n"] == 4
    assert any("model a · fne, linear_svm: 1 datasets" in note for note in report.notes)  # one dataset: no tau
    assert "| models | pets · fne, linear_svm | 4 | imagenet_top1 (baseline) |" in report.markdown()


def test_report_without_imagenet_accuracy_says_so_and_without_scores_says_how():
    results = [_result("pets", m, a, s, None) for m, a, s in (("a", 0.7, 1.0), ("b", 0.8, 2.0), ("c", 0.9, 3.0))]
    report = score_report(results, resamples=100)
    assert not any(r["baseline"] for r in report.rows)
    assert any("no ImageNet top-1 for a, b, c" in note for note in report.notes)
    empty = score_report([{**results[0], "analyses": {}}])
    assert not empty.rows and "analysis=layer_curve" in empty.notes[0]


def test_report_cli_writes_scores_files(tmp_path, capsys):
    for i, (model, accuracy, logme, imagenet) in enumerate(
        (("a", 0.7, 1.0, 80.0), ("b", 0.8, 2.0, 70.0), ("c", 0.9, 3.0, 75.0))
    ):
        run = tmp_path / "runs" / str(i)
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_result("pets", model, accuracy, logme, imagenet)))
    assert report_main([str(tmp_path / "runs"), "--scores", "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "transferability scores against test accuracy" in out and "logme" in out
    assert (tmp_path / "report" / "scores.md").is_file()
    csv_text = (tmp_path / "report" / "scores.csv").read_text()
    assert csv_text.splitlines()[0].startswith("across,group,n,predictor,baseline,kendall_tau")
    rows = {(r["group"], r["predictor"]): r for r in csv.DictReader(io.StringIO(csv_text))}
    assert rows[("pets · fne, linear_svm", "logme")]["kendall_tau"] == "1.0"  # LogME's order is the accuracy's


def test_the_scores_figure_draws_the_recorded_values(tmp_path):
    from tlbench.analysis.plots import plot_layer_scores, score_series

    features = synthetic()
    inputs, whole = whole_fit(features, FNE)
    record = layer_curve(features, inputs, whole, FNE, make_svm, "top1", 3, resamples=100, scores=["logme", "knn"])
    series = score_series(record)
    assert list(series) == ["depth", "logme", "knn"]
    layers = [r for r in record["rows"] if r["kind"] == "layer"]
    assert series["logme"]["x"] == [r["scores"]["logme"] for r in layers]
    assert series["knn"]["y"] == [100 * r["test"]["top1"] for r in layers]
    assert series["depth"]["baseline"] and series["depth"]["x"] == [1.0, 2.0, 3.0]
    path = plot_layer_scores({**record, "dataset": "synthetic", "model": "none"}, tmp_path / "scores.png")
    assert path.stat().st_size > 10_000


def test_report_never_pools_runs_of_different_settings():
    results = [
        _result("pets", m, a, s, t)
        for m, a, s, t in (("a", 0.7, 1.0, 80.0), ("b", 0.8, 2.0, 70.0), ("c", 0.9, 3.0, 75.0))
    ]
    knn = [
        {**r, "classifier": {"type": "knn"}, "metrics": {"test": {"top1": 0.5, "mean_per_class": 0.5}}} for r in results
    ]
    report = score_report(results + knn, resamples=100)
    groups = {r["group"] for r in report.rows}
    assert groups == {"pets · fne, linear_svm", "pets · fne, knn"}
    linear = {r["predictor"]: r for r in report.rows if r["group"] == "pets · fne, linear_svm"}
    assert linear["logme"]["kendall_tau"] == pytest.approx(1.0)  # not averaged with the kNN runs' accuracy


def test_an_undefined_score_is_left_out_of_tau_and_picks():
    rows = correlations({"s": [None, 1.0, 2.0, 3.0]}, [0.9, 0.1, 0.2, 0.3], "depth")
    assert rows[0]["n"] == 3 and rows[0]["kendall_tau"] == pytest.approx(1.0)
    (pick,) = picks({"s": [None, 1.0, 3.0, 2.0]}, [0.9, 0.1, 0.2, 0.3], ["a", "b", "c", "d"])
    assert pick["tap"] == "c" and pick["regret"] == pytest.approx(0.7)
    zero = np.zeros((12, 4), dtype=np.int8)  # a layer whose inputs are all zero: LogME is undefined
    assert layer_scores(zero, np.arange(12) % 3, ["logme"])["logme"] is None


def test_the_depth_baseline_counts_modules_not_reads():
    taps = ["blocks.0:patches", "blocks.0:cls", "blocks.1:patches", "blocks.1:cls", "norm:patches", "norm:cls"]
    assert module_depth(taps) == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    assert module_depth(["conv1", "conv2", "head:input"]) == [1.0, 2.0, 3.0]
    (pick,) = picks({"depth": module_depth(taps)}, [0.5] * 6, taps)
    assert pick["tap"] == "norm:cls"  # the last read, the one the head pools


def test_runner_passes_the_score_settings_and_scores_off_writes_nothing(tmp_path):
    from tlbench.analysis.runner import run_analyses
    from tlbench.tracking.loggers import analysis_scalars

    features = synthetic()
    inputs, whole = whole_fit(features, FNE)
    common = (features, inputs, whole, FNE, make_svm, "top1", ["a", "b", "c"], "fne")
    base = {"resamples": 50, "confidence": 0.95}
    on = run_analyses(
        {"layer_curve": {**base, "scores": ["knn", "logme", "knn"], "knn": {"k": 3, "temperature": 0.5}}},
        *common,
        tmp_path / "on",
        {"dataset": "d", "model": "m"},
    )["layer_curve"]
    assert on["protocol"]["scores"]["knn"]["k"] == 3 and on["protocol"]["scores"]["knn"]["temperature"] == 0.5
    assert on["protocol"]["scores"]["scores"] == ["knn", "logme"]  # duplicates dropped
    assert (tmp_path / "on" / "analysis" / "layer_scores.png").is_file()
    lines = (tmp_path / "on" / "analysis" / "layer_scores.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 3  # header, (depth, knn, logme) x (all, upper half)
    scalars = analysis_scalars({"layer_curve": on})
    assert {"analysis/score/knn", "analysis/score/logme", "analysis/kendall_tau/depth"} <= set(scalars)
    off = run_analyses({"layer_curve": {**base, "scores": []}}, *common, tmp_path / "off", {})["layer_curve"]
    assert "score_correlations" not in off and "scores" not in off["protocol"]
    assert all("scores" not in row for row in off["rows"])
    assert not (tmp_path / "off" / "analysis" / "layer_scores.png").exists()


def test_a_bare_string_for_scores_is_refused_with_the_list_form():
    with pytest.raises(ConfigError, match=r"must be a list, e.g. \[logme\]"):
        check_analyses({"layer_curve": {"scores": "logme"}}, ["a", "b"], "fne", few_shot_run=False, c_auto_kfold=False)


def test_an_undefined_score_is_a_gap_in_the_figure_and_absent_from_the_scalars(tmp_path):
    from tlbench.analysis.plots import plot_layer_scores, score_series
    from tlbench.analysis.transferability import score_summary
    from tlbench.tracking.loggers import analysis_scalars

    taps = ["blocks.0:patches", "blocks.0:cls", "blocks.1:patches", "blocks.1:cls"]
    logme = [None, 0.1, 0.3, 0.2]
    layers = [
        {"kind": "layer", "depth": i + 1, "tap": t, "test": {"top1": a}, "scores": {"logme": s}}
        for i, (t, a, s) in enumerate(zip(taps, [0.5, 0.6, 0.9, 0.8], logme, strict=True))
    ]
    full = {"kind": "full", "tap": "all", "test": {"top1": 0.9}, "scores": {"logme": None}}
    record = {"metric": "top1", "rows": [*layers, full], **score_summary(layers, "top1", ["logme"], resamples=50)}
    series = score_series(record)
    assert series["depth"]["x"] == [1.0, 1.0, 2.0, 2.0]  # as the baseline ranks them: blocks, not reads
    assert np.isnan(series["logme"]["x"][0]) and series["logme"]["x"][1:] == [0.1, 0.3, 0.2]
    assert plot_layer_scores(record, tmp_path / "s.png").is_file()
    scalars = analysis_scalars({"layer_curve": record})
    assert "analysis/score/logme" not in scalars and "analysis/kendall_tau/logme" in scalars
