"""The analyses' figures and CSV files (tlbench/analysis/plots.py), on synthetic records shaped like
Result.analyses["layer_curve"] and ["few_shot"]: what is drawn is read back from the Figure, the PNG
from disk."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from tlbench.analysis.plots import (
    draw_few_shot,
    draw_layer_curve,
    few_shot_series,
    layer_curve_series,
    plot_few_shot,
    plot_layer_curve,
    write_rows_csv,
)

SHOTS = [(1, "1", 1.0), (2, "2", 2.0), (5, "5", 5.0), (10, "10", 10.0), (20, "20", 20.0), (None, "all", 125.7)]
METHODS = ["fne", "last_layer", "layer:blocks.5.0"]


def layer_record(
    layers: int = 33, prefix: bool = True, none_every: int = 0, metric: str = "top1", seed: int = 0
) -> dict[str, Any]:
    """A layer curve: rising accuracy with noise; every `none_every`-th layer without an interval."""
    rng = random.Random(seed)
    taps = ["conv_stem"] + [f"blocks.{i // 3}.{i % 3}" for i in range(layers - 2)] + ["global_pool"]
    rows: list[dict[str, Any]] = []
    for depth, tap in enumerate(taps, 1):
        value = 0.3 + 0.6 * depth / layers + rng.uniform(-0.03, 0.03)
        low, high = (None, None) if none_every and depth % none_every == 0 else (value - 0.03, value + 0.03)
        test = {"top1": value, "mean_per_class": value - 0.01}
        row = {"kind": "layer", "depth": depth, "tap": tap, "dim": 32 * depth, "test": test}
        rows.append(row | {"low": low, "high": high})
    if prefix:
        for depth in sorted({d for d in (1, 5, 10, 20, layers) if d <= layers}):
            value = min(0.99, 0.5 + 0.45 * depth / layers)
            test = {"top1": value, "mean_per_class": value}
            rows.append(
                {"kind": "prefix", "depth": depth, "tap": taps[depth - 1], "dim": 100 * depth, "test": test}
                | {"low": value - 0.02, "high": value + 0.02}
            )
    full_test = {"top1": 0.985, "mean_per_class": 0.98}
    rows.append(
        {"kind": "full", "depth": None, "tap": f"all {layers} layers", "dim": 19200, "test": full_test}
        | {"low": 0.975, "high": 0.99}
    )
    comparison = {"a": "fne", "b": "last layer", "difference": 0.07, "low": 0.05, "high": 0.09, "p_value": 1e-8}
    return {
        "protocol": {"interval": "Wilson score, 95%", "C": 1.0},
        "metric": metric,
        "dataset": "digits",
        "model": "efficientnet_lite0",
        "rows": rows,
        "last_tap": taps[-1],
        "comparisons": [comparison | {"a_only": 40, "b_only": 2, "method": "McNemar"}],
    }


def few_shot_record(methods: list[str] = METHODS) -> dict[str, Any]:
    """Three methods over 1..20 shots and all; the third has no interval at 2 shots."""
    points = []
    for m, method in enumerate(methods):
        for shots, label, per_class in SHOTS:
            mean = 0.5 + 0.4 * (1 - per_class**-0.5) - 0.05 * m
            values = [mean + 0.01 * k for k in range(-2, 3)]
            low, high = (None, None) if (m == 2 and shots == 2) else (mean - 0.02, mean + 0.02)
            points.append(
                {"method": method, "shots": shots, "label": label, "per_class_train": per_class, "values": values}
                | {"mean": mean, "low": low, "high": high, "interval": "Student t over 5 seeds, 95%"}
            )
    return {
        "protocol": {"seeds": 5},  # no "interval": the points' description is shown
        "metric": "top1",
        "dataset": "digits",
        "model": "efficientnet_lite0",
        "points": points,
        "comparisons": [{"a": "fne", "b": "last_layer", "shots": 1, "label": "1", "mean_difference": 0.1}],
    }


def by_gid(ax: Any, gid: str) -> Any:
    found = [a for a in [*ax.lines, *ax.collections, *ax.patches] if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_layer_curve_draws_each_layer_the_fne_and_the_last_layer() -> None:
    record = layer_record()
    random.Random(1).shuffle(record["rows"])  # rows out of order: drawn by depth
    fig = draw_layer_curve(record)
    ax = fig.axes[0]
    layers = sorted((r for r in record["rows"] if r["kind"] == "layer"), key=lambda r: r["depth"])
    line = by_gid(ax, "layers")
    assert list(line.get_xdata()) == list(range(1, 34))
    np.testing.assert_allclose(line.get_ydata(), [100 * r["test"]["top1"] for r in layers])
    assert [t.get_text() for t in ax.get_xticklabels()] == [r["tap"] for r in layers]

    last = by_gid(ax, "last")
    assert list(last.get_xdata()) == [33]
    np.testing.assert_allclose(last.get_ydata(), [100 * layers[-1]["test"]["top1"]])
    assert last.get_marker() != line.get_marker()
    assert f"last layer: {100 * layers[-1]['test']['top1']:.1f}%" in [t.get_text() for t in ax.texts]

    full = by_gid(ax, "full")
    np.testing.assert_allclose(full.get_ydata(), [98.5, 98.5])
    assert full.get_linestyle() == "--"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["each layer alone", "layers 1..i together", "FNE, all 33 layers: 98.5%", "last layer"]

    prefix = by_gid(ax, "prefix")
    assert list(prefix.get_xdata()) == [1, 5, 10, 20, 33]
    expected = [100 * min(0.99, 0.5 + 0.45 * d / 33) for d in (1, 5, 10, 20, 33)]
    np.testing.assert_allclose(prefix.get_ydata(), expected)
    # the layers' band spans low..high: its vertices stay within the intervals' range
    band = by_gid(ax, "layers_band").get_paths()[0].vertices
    lows, highs = [100 * r["low"] for r in layers], [100 * r["high"] for r in layers]
    assert band[:, 1].min() == pytest.approx(min(lows)) and band[:, 1].max() == pytest.approx(max(highs))
    low_full, high_full = by_gid(ax, "full_band").get_bbox().get_points()[:, 1]
    assert (low_full, high_full) == pytest.approx((97.5, 99.0))

    assert ax.get_ylabel() == "test top-1 (%)"
    assert ax.get_title() == "digits · efficientnet_lite0: accuracy of each layer alone"
    note = next(t.get_text() for t in fig.texts if t.get_gid() == "note")
    assert "Wilson score, 95%" in note and "+7.0 points" in note


def test_layer_curve_with_many_layers_no_prefix_and_missing_intervals() -> None:
    record = layer_record(layers=50, prefix=False, none_every=4, metric="mean_per_class")
    record["protocol"].pop("interval")
    fig = draw_layer_curve(record)
    ax = fig.axes[0]
    assert not [a for a in ax.lines if a.get_gid() == "prefix"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 10 <= len(labels) <= 40  # every k-th tap name
    assert labels[0] == "conv_stem" and labels[-1] == "global_pool"
    # the band has a gap at each layer without an interval: runs 1-3, 5-7, ..., 45-47, 49-50
    assert len(by_gid(ax, "layers_band").get_paths()) == 13
    layers = [r for r in record["rows"] if r["kind"] == "layer"]
    np.testing.assert_allclose(by_gid(ax, "layers").get_ydata(), [100 * r["test"]["mean_per_class"] for r in layers])
    np.testing.assert_allclose(by_gid(ax, "full").get_ydata(), [98.0, 98.0])
    assert ax.get_ylabel() == "test mean per-class accuracy (%)"
    note = next(t.get_text() for t in fig.texts if t.get_gid() == "note")
    assert "intervals" not in note  # no interval method given: none claimed


def test_layer_curve_series_finds_the_last_layer_by_its_tap() -> None:
    record = layer_record(layers=10, prefix=False)
    record["last_tap"] = "blocks.2.1"  # named, not the deepest row
    assert layer_curve_series(record)["last"]["tap"] == "blocks.2.1"
    assert layer_curve_series(record)["last"]["depth"] == 9
    del record["last_tap"]
    series = layer_curve_series(record)
    assert series["last"]["tap"] == "global_pool" and series["prefix"]["depth"] == []
    full = next(r for r in record["rows"] if r["kind"] == "full")
    full["low"] = full["high"] = None
    assert np.isnan(layer_curve_series(record)["full"]["low"])


def test_few_shot_draws_one_line_per_method_on_a_log_axis() -> None:
    record = few_shot_record()
    record["points"].reverse()  # drawn in order of images per class all the same
    fig = draw_few_shot(record)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5", "10", "20", "all"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(["FNE", "last layer", METHODS[2]])
    for method in METHODS:
        points = sorted((p for p in record["points"] if p["method"] == method), key=lambda p: p["per_class_train"])
        line = by_gid(ax, method)
        np.testing.assert_allclose(line.get_xdata(), [p["per_class_train"] for p in points])
        np.testing.assert_allclose(line.get_ydata(), [100 * p["mean"] for p in points])
    assert len(by_gid(ax, "fne_band").get_paths()) == 1
    assert len(by_gid(ax, f"{METHODS[2]}_band").get_paths()) == 2  # no interval at 2 shots: a gap
    # 1 shot is left alone by the gap: its interval drawn as a bar, at x = 1 from low to high
    (segment,) = by_gid(ax, f"{METHODS[2]}_band_alone").get_segments()
    first = next(p for p in record["points"] if p["method"] == METHODS[2] and p["shots"] == 1)
    np.testing.assert_allclose(segment, [[1.0, 100 * first["low"]], [1.0, 100 * first["high"]]])
    assert not [c for c in ax.collections if c.get_gid() == "fne_band_alone"]
    assert ax.get_ylabel() == "test top-1 (%)"
    assert ax.get_title() == "digits · efficientnet_lite0: accuracy against training images per class"
    note = next(t.get_text() for t in fig.texts if t.get_gid() == "note")
    assert "Student t over 5 seeds" in note


def test_few_shot_series_skips_points_without_a_mean() -> None:
    record = few_shot_record(["fne"])
    record["points"][0]["mean"] = None
    series = few_shot_series(record)
    assert list(series) == ["fne"]
    assert series["fne"]["label"] == ["2", "5", "10", "20", "all"]


@pytest.mark.parametrize(("layers", "prefix"), [(33, True), (50, False)])
def test_plots_are_saved_as_png(tmp_path: Path, layers: int, prefix: bool) -> None:
    curve = plot_layer_curve(layer_record(layers, prefix, none_every=5), tmp_path / "deep" / "layer_curve.png")
    shots = plot_few_shot(few_shot_record(), tmp_path / "few_shot.png")
    assert curve == tmp_path / "deep" / "layer_curve.png"
    for path in (curve, shots):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            pixels = np.asarray(image.convert("RGB"))
        assert height == 600 and 900 <= width <= 2400  # 5 inches tall at 120 dpi; wider with more layers
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # something drawn, not a blank canvas
    with Image.open(curve) as wide, Image.open(shots) as narrow:
        assert wide.size[0] > narrow.size[0]  # the layer curve widens with the number of layers
    assert plt.get_fignums() == []  # the figures were closed


def test_write_rows_csv_round_trip(tmp_path: Path) -> None:
    curve = layer_record(layers=5, prefix=False)["rows"]
    path = write_rows_csv(curve, tmp_path / "out" / "layer_curve.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["kind", "depth", "tap", "dim", "test.top1", "test.mean_per_class", "low", "high"]
    assert len(rows) == 6 and [r["kind"] for r in rows] == ["layer"] * 5 + ["full"]
    assert float(rows[2]["test.top1"]) == curve[2]["test"]["top1"]  # full precision
    assert rows[-1]["depth"] == "" and rows[-1]["tap"] == "all 5 layers"  # None: empty

    points = few_shot_record(["fne"])["points"]
    points[0] = points[0] | {"extra": {"a": 1}}  # a key only one row has: a column, empty elsewhere
    path = write_rows_csv(points, tmp_path / "few_shot.csv")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [*points[1].keys(), "extra.a"]
    assert [float(v) for v in rows[3]["values"].split(";")] == points[3]["values"]
    assert rows[0]["extra.a"] == "1" and rows[1]["extra.a"] == ""
    assert rows[5]["shots"] == "" and rows[5]["label"] == "all"
    assert not list(tmp_path.glob("*.tmp"))
