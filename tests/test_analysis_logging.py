"""A Result's analyses sent to the loggers (tlbench/tracking/loggers.py): to an offline W&B run (read
back from its .wandb file and media files, tests/wandb_records.py) and to the CSV logger (metrics.csv)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_analysis_plots import METHODS, SHOTS, few_shot_record, layer_record
from wandb_records import run_summary

from tlbench.analysis.plots import plot_layer_curve
from tlbench.results import Result
from tlbench.tracking.loggers import analysis_scalars, analysis_table, log_result


def make_result(run_dir: Path, analyses: dict[str, Any]) -> Result:
    return Result(
        dataset="digits",
        model="efficientnet_lite0",
        strategy="fne",
        headline_metric="top1",
        metrics={"train": {"top1": 1.0, "mean_per_class": 1.0}, "test": {"top1": 0.9, "mean_per_class": 0.85}},
        feature_dim=19200,
        split_sizes={"train": 1257, "test": 540},
        num_classes=10,
        timings={"extract": 4.0, "fit": 0.5, "total": 6.0},
        cache={"train": "miss", "test": "miss"},
        skipped_files={},
        seed=0,
        backbone={},
        taps=["conv_stem", "global_pool"],
        postprocess={},
        classifier={"name": "linear_svm"},
        config={"dataset": {"name": "digits"}, "seed": 0},
        provenance={},
        run_dir=str(run_dir),
        analyses=analyses,
    )


def expected_scalars(curve: dict[str, Any], shots: dict[str, Any]) -> dict[str, Any]:
    """What the records say, computed here independently of loggers.py."""
    layers = [r for r in curve["rows"] if r["kind"] == "layer"]
    best = max(layers, key=lambda r: r["test"]["top1"])
    out = {
        "analysis/best_layer": best["tap"],
        "analysis/best_layer_depth": best["depth"],
        "analysis/best_layer_top1": best["test"]["top1"],
        "analysis/last_layer_top1": next(r for r in layers if r["tap"] == "global_pool")["test"]["top1"],
        "analysis/fne_top1": 0.985,
    }
    out.update({f"analysis/few_shot/{p['method']}/{p['label']}": p["mean"] for p in shots["points"]})
    return out


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B offline, its config, cache and staging under tmp_path (never ~/)."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


def test_wandb_run_gets_tables_figure_line_plot_and_scalars(tmp_path: Path, wandb_offline: None) -> None:
    from tlbench.tracking.wandb_logger import finish, make_wandb_logger

    run_dir = tmp_path / "run"
    curve, shots = layer_record(), few_shot_record()
    png = plot_layer_curve(curve, run_dir / "analysis" / "layer_curve.png")  # few_shot.png: not written
    result = make_result(run_dir, {"layer_curve": curve, "few_shot": shots})
    logger = make_wandb_logger(run_dir=str(run_dir), offline=True, run_config=result.config)
    try:
        log_result(logger, result, config_logged=True)
        logger.finalize("success")
    finally:
        finish()  # a failed test leaves no W&B run open for the next

    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    files = wandb_file.parent / "files"
    info = run_summary(wandb_file)
    summary = info["summary"]
    assert summary["test/top1"] == pytest.approx(0.9)  # the existing metrics are still logged
    for key, value in expected_scalars(curve, shots).items():
        assert summary[key] == (value if isinstance(value, str) else pytest.approx(value)), key

    def table(key: str) -> dict[str, Any]:
        assert summary[f"{key}/_type"] == "table-file"
        return json.loads((files / summary[f"{key}/path"]).read_text())

    layer_table = table("analysis/layer_curve")
    columns = layer_table["columns"]
    assert columns == ["kind", "depth", "tap", "dim", "test.top1", "test.mean_per_class", "low", "high"]
    assert len(layer_table["data"]) == len(curve["rows"])
    for row, sent in zip(curve["rows"], layer_table["data"]):
        assert sent[columns.index("tap")] == row["tap"]
        assert sent[columns.index("test.top1")] == pytest.approx(row["test"]["top1"])
    shot_table = table("analysis/few_shot")
    columns = shot_table["columns"]
    assert columns[:4] == ["method", "shots", "label", "per_class_train"] and "values" in columns
    assert len(shot_table["data"]) == len(METHODS) * len(SHOTS)
    assert [r[columns.index("label")] for r in shot_table["data"][: len(SHOTS)]] == [s[1] for s in SHOTS]
    assert shot_table["data"][0][columns.index("values")] == ";".join(str(v) for v in shots["points"][0]["values"])

    # the figure: the PNG from the run directory, as an image
    (image_name,) = summary["analysis/layer_curve_plot/filenames"]
    with Image.open(files / image_name) as sent, Image.open(png) as drawn:
        assert sent.format == "PNG" and sent.size == drawn.size
        assert summary["analysis/layer_curve_plot/height"] == drawn.size[1]
    assert not [k for k in summary if k.startswith("analysis/few_shot_plot")]  # no PNG, no image

    # the native line plot: a Vega panel over a table of depth vs 100 * metric
    panel = info["config"]["_wandb/visualize/analysis/layer_curve_line"]["panel_config"]
    assert panel["panelDefId"] == "wandb/line/v0"
    assert panel["fieldSettings"]["x"] == "depth" and panel["fieldSettings"]["y"] == "test top-1 (%)"
    line = table("analysis/layer_curve_line_table")
    layers = [r for r in curve["rows"] if r["kind"] == "layer"]
    assert [r[0] for r in line["data"]] == [r["depth"] for r in layers]
    assert [r[1] for r in line["data"]] == pytest.approx([100 * r["test"]["top1"] for r in layers])


def test_csv_logger_gets_the_numeric_scalars_in_the_metrics_row(tmp_path: Path, monkeypatch) -> None:
    from pytorch_lightning.loggers import CSVLogger

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails: the CSV path must not need it
    curve, shots = layer_record(metric="top1"), few_shot_record()
    result = make_result(tmp_path / "run", {"layer_curve": curve, "few_shot": shots})
    logger = CSVLogger(save_dir=str(tmp_path / "run"), name="csv", version="")
    log_result(logger, result, config_logged=False)
    logger.finalize("success")

    with (Path(logger.log_dir) / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # the analyses' scalars share the final metrics' row
    (row,) = rows
    assert float(row["test/top1"]) == pytest.approx(0.9)
    for key, value in expected_scalars(curve, shots).items():
        if isinstance(value, str):
            assert key not in row  # text (the best layer's tap) is not a CSV metric
        else:
            assert float(row[key]) == pytest.approx(value), key


def test_no_analyses_logs_as_before() -> None:
    """A logger with tables and no analyses: the same metrics and the results table only."""

    class Recorder:
        def __init__(self) -> None:
            self.metrics: list[dict[str, Any]] = []
            self.tables: list[str] = []

        def log_hyperparams(self, params: dict[str, Any]) -> None:
            pass

        def log_metrics(self, metrics: dict[str, Any]) -> None:
            self.metrics.append(metrics)

        def log_table(self, key: str, columns: list[str], data: list[list[Any]]) -> None:
            self.tables.append(key)

        def save(self) -> None:
            pass

    logger = Recorder()
    log_result(logger, make_result(Path("run"), {}), config_logged=True)  # type: ignore[arg-type]
    (metrics,) = logger.metrics
    assert not [k for k in metrics if k.startswith("analysis/")]
    assert set(metrics) == {"train/top1", "train/mean_per_class", "test/top1", "test/mean_per_class"} | {
        "time/extract",
        "time/fit",
        "time/total",
        "feature_dim",
    }
    assert logger.tables == ["results"]


def test_analysis_scalars_follow_the_record() -> None:
    curve = layer_record(layers=6, prefix=True, metric="mean_per_class")
    curve["best_tap"] = "blocks.0.1"  # the analysis's own choice wins over a recomputed one
    curve["last_tap"] = "blocks.1.0"
    shots = few_shot_record(["fne"])
    shots["points"][1]["mean"] = None
    scalars = analysis_scalars({"layer_curve": curve, "few_shot": shots})
    layers = {r["tap"]: r for r in curve["rows"] if r["kind"] == "layer"}
    assert scalars["analysis/best_layer"] == "blocks.0.1" and scalars["analysis/best_layer_depth"] == 3
    assert scalars["analysis/best_layer_mean_per_class"] == layers["blocks.0.1"]["test"]["mean_per_class"]
    assert scalars["analysis/last_layer_mean_per_class"] == layers["blocks.1.0"]["test"]["mean_per_class"]
    assert scalars["analysis/fne_mean_per_class"] == 0.98
    assert not [k for k in scalars if k.endswith("_top1")]  # prefix rows are not layers; metric followed
    assert sorted(k for k in scalars if k.startswith("analysis/few_shot/")) == sorted(
        f"analysis/few_shot/fne/{label}" for _, label, _ in SHOTS if label != "2"
    )
    assert analysis_scalars({}) == {}


def test_analysis_table_sends_a_mixed_column_as_text() -> None:
    import wandb

    rows = [{"tap": "a", "depth": 1, "test": {"top1": 0.5}}, {"tap": "b", "depth": "n/a", "test": {"top1": None}}]
    columns, data = analysis_table(rows)
    assert columns == ["tap", "depth", "test.top1"]
    assert data == [["a", "1", 0.5], ["b", "n/a", None]]  # depth as text; numbers with None stay numbers
    wandb.Table(columns=columns, data=data)  # accepted
    with pytest.raises(TypeError):
        wandb.Table(columns=columns, data=[["a", 1, 0.5], ["b", "n/a", None]])  # what the conversion avoids
