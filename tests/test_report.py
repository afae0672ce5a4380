"""tlbench-report on generated results.json files: exact means, stds (n-1) and counts, the best
cell per column, Markdown / CSV / LaTeX / PNG, and bad input (no results, corrupt file, metric sets)."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest
from PIL import Image

from tlbench.report.cli import main

# (strategy, dataset, seed) -> test top1; mean_per_class differs so the metric choice shows
VALUES = {
    ("fne", "mit67", 0): 0.80,
    ("fne", "mit67", 1): 0.82,
    ("fne", "mit67", 2): 0.87,
    ("last_layer", "mit67", 0): 0.75,
    ("fne", "caltech101", 0): 0.91,
    ("last_layer", "caltech101", 0): 0.90,
    ("last_layer", "caltech101", 1): 0.94,
}


def write_result(root: Path, strategy: str, dataset: str, seed: int, top1: float, **extra) -> Path:
    folder = root / f"{strategy}_{dataset}_{seed}"
    folder.mkdir(parents=True)
    record = {
        "dataset": dataset,
        "model": "vgg16",
        "strategy": strategy,
        "seed": seed,
        "headline_metric": "top1",
        "metrics": {"test": {"top1": top1, "mean_per_class": top1 - 0.05}},
        "config": {"classifier": {"C": 1.0}, "dataset": {"name": dataset}},
        **extra,
    }
    (folder / "results.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    for (strategy, dataset, seed), value in VALUES.items():
        write_result(root, strategy, dataset, seed, value)
    return root


def run_report(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_means_stds_counts_and_best(results, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, stdout, _ = run_report(capsys, str(results), "--out", str(out_dir))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO((out_dir / "report.csv").read_text())))
    cells = {(r["strategy"], r["dataset"]): r for r in rows}
    assert set(cells) == {
        ("fne", "mit67"),
        ("last_layer", "mit67"),
        ("fne", "caltech101"),
        ("last_layer", "caltech101"),
    }
    fne_mit = [0.80, 0.82, 0.87]
    assert float(cells[("fne", "mit67")]["mean"]) == pytest.approx(statistics.mean(fne_mit), abs=1e-6)
    assert float(cells[("fne", "mit67")]["std"]) == pytest.approx(statistics.stdev(fne_mit), abs=1e-6)
    assert cells[("fne", "mit67")]["n"] == "3"
    assert float(cells[("last_layer", "mit67")]["std"]) == 0.0 and cells[("last_layer", "mit67")]["n"] == "1"
    assert float(cells[("last_layer", "caltech101")]["mean"]) == pytest.approx(0.92, abs=1e-6)
    assert float(cells[("last_layer", "caltech101")]["std"]) == pytest.approx(math.sqrt(0.0008), abs=1e-6)
    # best per column: fne on mit67 (83.0 vs 75.0), last_layer on caltech101 (92.0 vs 91.0)
    assert [(r["strategy"], r["dataset"]) for r in rows if r["best"] == "True"] == [
        ("fne", "mit67"),
        ("last_layer", "caltech101"),
    ]
    markdown = (out_dir / "report.md").read_text()
    assert markdown in stdout
    assert "| strategy | caltech101 | mit67 |" in markdown
    assert "| fne | 91.0 | **83.0±3.6 (n=3)** |" in markdown
    assert "| last_layer | **92.0±2.8 (n=2)** | 75.0 |" in markdown
    latex = (out_dir / "report.tex").read_text()
    assert "\\textbf{83.0$\\pm$3.6 (n=3)}" in latex and "last\\_layer" in latex
    with Image.open(out_dir / "report.png") as png:
        png.load()
        assert png.size[0] > 100 and png.size[1] > 100


def test_rows_columns_and_metric_are_configurable(results, tmp_path, capsys):
    code, stdout, _ = run_report(
        capsys, str(results), "--rows", "classifier.C", "--cols", "strategy", "--metric", "mean_per_class",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0
    fne = [0.80, 0.82, 0.87, 0.91]
    # one row: it is the best of every column
    assert f"| 1.0 | **{100 * (statistics.mean(fne) - 0.05):.1f}±{100 * statistics.stdev(fne):.1f} (n=4)** |" in stdout


def test_no_results_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_report(capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert code == 2 and "no results.json under" in err
    code, _, err = run_report(capsys, str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in err


def test_corrupt_results_are_skipped_and_named(results, tmp_path, capsys):
    broken = results / "broken"
    broken.mkdir()
    (broken / "results.json").write_text('{"dataset": "mit67", "metr')
    code, stdout, err = run_report(capsys, str(results), "--out", str(tmp_path / "r"))
    assert code == 0
    assert f"skipped {broken / 'results.json'}: unreadable" in err
    assert f"{len(VALUES)} runs" in stdout


def test_results_with_different_metric_sets_are_refused(results, tmp_path, capsys):
    odd = write_result(results, "finetune", "mit67", 0, 0.9)
    record = json.loads((odd / "results.json").read_text())
    del record["metrics"]["test"]["mean_per_class"]
    (odd / "results.json").write_text(json.dumps(record))
    code, _, err = run_report(capsys, str(results), "--metric", "mean_per_class", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "lack the metric 'mean_per_class'" in err and str(odd / "results.json") in err
    assert not (tmp_path / "r" / "report.md").exists()


def test_ours_vs_paper_with_a_preset(tmp_path, capsys):
    paper = {"fc6": {"dtd": {"mean": 69.6}}, "fne": {"dtd": {"mean": 73.0}, "knots": {"mean": 74.1, "std": 6.9}}}
    root = tmp_path / "outputs"
    for layer, value in (("fc6", 0.70),):
        folder = write_result(root, "last_layer", "dtd", 0, value)
        record = json.loads((folder / "results.json").read_text())
        record["config"].update(strategy={"name": "last_layer", "layer": layer}, paper=paper)
        (folder / "results.json").write_text(json.dumps(record))
    for split, value in ((0, 0.70), (1, 0.80)):
        write_result(root, "fne", "knots", split, value, config={"paper": paper, "strategy": {"name": "fne"}})
    code, stdout, _ = run_report(
        capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path / "r")
    )
    assert code == 0
    assert "| fc6 | **70.0** |  |" in stdout  # method: last_layer is named by its layer
    assert "ours / paper (ours - paper)" in stdout
    assert "| fc6 | 70.0 / 69.6 (+0.4) |  |" in stdout
    assert "| fne |  | 75.0 / 74.1±6.9 (+0.9) |" in stdout
    assert "ours / paper" in (tmp_path / "r" / "report.md").read_text()


def test_wandb_source_without_credentials_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, _, err = run_report(capsys, "--wandb", "me/tlbench", "--out", str(tmp_path / "r"))
    assert code == 2 and "--wandb needs W&B online, but no W&B API key" in err
    code, _, err = run_report(capsys, "--out", str(tmp_path / "r"))
    assert code == 2 and "give result paths, or --wandb" in err
