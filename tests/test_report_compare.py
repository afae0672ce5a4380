"""tlbench-report compare RUN_A RUN_B and tlbench-report --compare ROW_A ROW_B on fabricated run
directories (results.json + predictions.npz): the printed and written numbers against tlbench.stats
computed directly, and the errors on different test images, a missing predictions file and an
unknown row."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tlbench import stats
from tlbench.predictions import SplitPredictions, write_predictions
from tlbench.report.cli import main

K = 5  # classes
LAYERS = ["fne", "fc6", "fc7"]
N = 300  # test images


def simulate(seed: int, accuracy: float, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """Test labels (the same for every run: seed-independent) and predictions right with `accuracy`."""
    labels = np.random.default_rng(1000).integers(0, K, size=n)
    right = np.random.default_rng(seed).random(n) < accuracy
    return labels, np.where(right, labels, (labels + 1 + seed % (K - 1)) % K)


def write_run(
    root: Path,
    name: str,
    layer: str,
    seed: int,
    accuracy: float,
    dataset: str = "mit67",
    predictions: bool = True,
    headline: str = "top1",
    indices: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    **dataset_keys,
) -> Path:
    """A run directory: results.json whose test metrics are those of its predictions, and (unless
    predictions=False, as fine-tuning runs) predictions.npz of the test split."""
    true, predicted = simulate(seed * 7 + LAYERS.index(layer), accuracy)
    true = true if labels is None else labels
    predicted = predicted[: len(true)]
    folder = root / name
    folder.mkdir(parents=True)
    strategy = {"name": "fne"} if layer == "fne" else {"name": "last_layer", "layer": layer}
    record = {
        "dataset": dataset,
        "model": "vgg16",
        "strategy": strategy["name"],
        "seed": seed,
        "headline_metric": headline,
        "num_classes": K,
        "split_sizes": {"test": len(true)},
        "metrics": {"test": {m: stats.metric_value(true, predicted, m, K) for m in ("top1", "mean_per_class")}},
        "config": {
            "seed": seed,
            "dataset": {"name": dataset, "root": f"/data/{name}", "batch_size": 32, **dataset_keys},
            "strategy": strategy,
            "classifier": {"C": 1.0},
        },
    }
    (folder / "results.json").write_text(json.dumps(record))
    if predictions:
        idx = np.arange(len(true)) if indices is None else indices
        write_predictions(
            folder, {"test": SplitPredictions(idx, true, predicted), "train": SplitPredictions(idx, true, true)}
        )
    return folder


def run_report(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def load(folder: Path):
    with np.load(folder / "predictions.npz") as data:
        return data["test/labels"], data["test/predictions"]


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


# ---------------------------------------------------------------- tlbench-report compare RUN_A RUN_B


@pytest.mark.parametrize(("metric", "headline"), [("headline", "mean_per_class"), ("top1", "mean_per_class")])
def test_compare_two_runs_prints_stats_numbers(tmp_path, capsys, metric, headline):
    a = write_run(tmp_path, "a", "fne", 0, 0.90, headline=headline)
    b = write_run(tmp_path, "b", "fc7", 0, 0.60, headline=headline)
    code, out, err = run_report(capsys, "compare", str(a), str(b), "--metric", metric, "--resamples", "2000")
    assert code == 0, err
    assert "warning" not in err
    name = headline if metric == "headline" else metric
    labels, pa = load(a)
    _, pb = load(b)
    boot = stats.paired_bootstrap(labels, pa, pb, name, K, resamples=2000)
    mc = stats.mcnemar_exact(labels, pa, pb)
    value_a, value_b = stats.metric_value(labels, pa, name, K), stats.metric_value(labels, pb, name, K)
    assert f"test {name} on the same {N} images: A {100 * value_a:.2f}%, B {100 * value_b:.2f}%" in out
    interval = f"[{points(boot['low'])}, {points(boot['high'])}]"
    assert f"A - B: {points(boot['difference'])} points, 95% interval {interval}" in out
    assert f"{mc['a_only']} images right only for A, {mc['b_only']} right only for B" in out
    p_text = re.search(r"McNemar exact p = (\S+):", out).group(1)
    assert float(p_text) == pytest.approx(mc["p_value"], rel=0.01)
    assert "2000 resamples" in out and "fne · vgg16 · mit67 · seed 0" in out and "fc7 · vgg16" in out
    # 30 points apart on 300 images: the interval is clear of 0 and the reading says so
    assert boot["low"] > 0
    assert "reading: A is better on these test images" in out


def test_compare_runs_returns_the_stats_results(tmp_path):
    from tlbench.report.compare import compare_runs, load_run

    a = write_run(tmp_path, "a", "fc6", 1, 0.70)
    b = write_run(tmp_path, "b", "fc7", 1, 0.71)
    result = compare_runs(load_run(a / "results.json"), load_run(b), "mean_per_class", resamples=500, seed=3)
    labels, pa = load(a)
    _, pb = load(b)
    assert result.bootstrap == stats.paired_bootstrap(labels, pa, pb, "mean_per_class", K, resamples=500, seed=3)
    assert result.mcnemar == stats.mcnemar_exact(labels, pa, pb)
    assert result.value_a == stats.metric_value(labels, pa, "mean_per_class", K)
    assert result.n_images == N and result.metric == "mean_per_class" and not result.warnings
    if result.bootstrap["low"] <= 0 <= result.bootstrap["high"]:
        assert result.reading().startswith("no clear difference")


def test_compare_identical_predictions_is_no_difference(tmp_path, capsys):
    a = write_run(tmp_path, "a", "fc7", 0, 0.8)
    b = tmp_path / "b"
    b.mkdir()
    (b / "results.json").write_text((a / "results.json").read_text())
    (b / "predictions.npz").write_bytes((a / "predictions.npz").read_bytes())
    code, out, _ = run_report(capsys, "compare", str(a), str(b), "--resamples", "200")
    assert code == 0
    assert "A - B: +0.00 points, 95% interval [+0.00, +0.00]" in out
    assert "McNemar exact p = 1.000: 0 images right only for A, 0 right only for B" in out
    assert "reading: no clear difference" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "dtd"}, "datasets differ (mit67 vs dtd)"),
        ({"split_id": 1}, "dataset.split_id differs (0 vs 1)"),
        ({"indices": np.arange(N) + 1}, "test image indices differ at 300 of 300 rows (first at row 0: 0 vs 1)"),
        ({"labels": (np.arange(N) * 7) % K}, "test image labels differ"),
        ({"indices": np.arange(N - 1)}, "numbers of test images differ"),
    ],
)
def test_compare_refuses_runs_on_different_test_images(tmp_path, capsys, change, message):
    a = write_run(tmp_path, "a", "fne", 0, 0.8, split_id=0)
    kwargs = {"split_id": 0, **change}
    if "indices" in change and len(change["indices"]) != N:
        labels, _ = simulate(0, 0.8)
        kwargs["labels"] = labels[: len(change["indices"])]
    b = write_run(tmp_path, "b", "fc7", 0, 0.8, **kwargs)
    code, out, err = run_report(capsys, "compare", str(a), str(b))
    assert code == 2 and out == ""
    assert "not evaluated on the same test images" in err and message in err
    assert str(a / "results.json") in err and str(b / "results.json") in err


def test_compare_without_predictions_names_the_run(tmp_path, capsys):
    a = write_run(tmp_path, "a", "fne", 0, 0.8)
    b = write_run(tmp_path, "finetuned", "fc7", 0, 0.8, predictions=False)
    code, out, err = run_report(capsys, "compare", str(a), str(b))
    assert code == 2 and out == ""
    assert f"run {b} has no per-image predictions" in err
    assert str(b / "predictions.npz") in err and "fine-tuning runs do not write predictions.npz" in err
    code, _, err = run_report(capsys, "compare", str(a), str(tmp_path / "nowhere"))
    assert code == 2 and f"{tmp_path / 'nowhere'} does not exist" in err


# ---------------------------------------------------------------- tlbench-report PATHS --compare ROW_A ROW_B


ACCURACY = {"fne": 0.82, "fc7": 0.76}


@pytest.fixture
def table_runs(tmp_path: Path) -> Path:
    """mit67: fne and fc7 over seeds 0-2 with predictions (fne also seed 5, which fc7 lacks); dtd:
    fne and fc7 over (seed, split_id) in {0, 1} x {1, 2}, fc7 without predictions (as fine-tuning)."""
    root = tmp_path / "outputs"
    for layer, accuracy in ACCURACY.items():
        for seed in (0, 1, 2):
            write_run(root, f"{layer}_mit67_{seed}", layer, seed, accuracy + 0.01 * seed)
        for seed in (0, 1):
            for split in (1, 2):
                write_run(
                    root,
                    f"{layer}_dtd_{seed}_{split}",
                    layer,
                    seed,
                    accuracy - 0.02 * split + 0.005 * seed,
                    dataset="dtd",
                    predictions=layer == "fne",
                    headline="mean_per_class",
                    split_id=split,
                )
    write_run(root, "fne_mit67_5", "fne", 5, 0.9)
    return root


def test_compare_rows_against_stats(table_runs, tmp_path, capsys):
    out_dir = tmp_path / "report"
    code, out, err = run_report(
        capsys,
        str(table_runs),
        "--rows",
        "method",
        "--cols",
        "dataset",
        "--compare",
        "fne",
        "fc7",
        "--resamples",
        "500",
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    rows = {r["dataset"]: r for r in csv.DictReader(io.StringIO((out_dir / "compare.csv").read_text()))}
    assert set(rows) == {"mit67", "dtd"}

    def metric(name: str, which: str) -> float:
        return json.loads((table_runs / name / "results.json").read_text())["metrics"]["test"][which]

    # mit67: pairs by seed 0, 1, 2 (fne's seed 5 has no partner), headline top1
    a = [metric(f"fne_mit67_{s}", "top1") for s in (0, 1, 2)]
    b = [metric(f"fc7_mit67_{s}", "top1") for s in (0, 1, 2)]
    t, w = stats.paired_test(a, b, "t"), stats.paired_test(a, b, "wilcoxon")
    mit = rows["mit67"]
    assert mit["pairs"] == "3" and mit["row_a"] == "fne" and mit["row_b"] == "fc7"
    for column, expected in [
        ("mean_difference", t["mean_difference"]),
        ("t_low", t["low"]),
        ("t_high", t["high"]),
        ("t_statistic", t["statistic"]),
        ("t_p", t["p_value"]),
        ("cohens_dz", t["effect_size"]),
        ("wilcoxon_statistic", w["statistic"]),
        ("wilcoxon_p", w["p_value"]),
        ("rank_biserial", w["effect_size"]),
    ]:
        assert float(mit[column]) == pytest.approx(expected, rel=1e-5, abs=1e-9), column
    labels, pa = load(table_runs / "fne_mit67_0")
    _, pb = load(table_runs / "fc7_mit67_0")
    mc = stats.mcnemar_exact(labels, pa, pb)
    boot = stats.paired_bootstrap(labels, pa, pb, "top1", K, resamples=500)
    assert (int(mit["mcnemar_a_only"]), int(mit["mcnemar_b_only"])) == (mc["a_only"], mc["b_only"])
    assert float(mit["mcnemar_p"]) == pytest.approx(mc["p_value"], rel=1e-5)
    assert mit["bootstrap_pair"] == "seed=0"
    for key in ("difference", "low", "high"):
        assert float(mit[f"bootstrap_{key}"]) == pytest.approx(boot[key], rel=1e-5, abs=1e-9)
    assert "1 run(s) of A without a partner (seed=5)" in mit["notes"]
    assert "McNemar/bootstrap on the pair seed=0" in mit["notes"]

    # dtd: pairs by (split_id, seed), headline mean_per_class; fc7 has no predictions.npz
    keys = [(s, k) for k in (1, 2) for s in (0, 1)]
    a = [metric(f"fne_dtd_{s}_{k}", "mean_per_class") for s, k in keys]
    b = [metric(f"fc7_dtd_{s}_{k}", "mean_per_class") for s, k in keys]
    t = stats.paired_test(a, b, "t")
    dtd = rows["dtd"]
    assert dtd["pairs"] == "4"
    assert float(dtd["mean_difference"]) == pytest.approx(t["mean_difference"], rel=1e-5)
    assert float(dtd["t_p"]) == pytest.approx(t["p_value"], rel=1e-5)
    assert dtd["mcnemar_p"] == "" and dtd["bootstrap_low"] == ""
    assert "4 of 8 runs have no predictions.npz" in dtd["notes"]

    # printed after the usual table, and the same Markdown in compare.md
    table_part, compare_part = out.split("A = fne, B = fc7")
    assert "| method | dtd | mit67 |" in table_part
    mit_line = next(line for line in compare_part.splitlines() if line.startswith("| mit67 |"))
    cells = [c.strip() for c in mit_line.strip("|").split("|")]
    assert cells[1] == "3" and cells[2] == points(float(mit["mean_difference"]))
    assert cells[3] == f"[{points(float(mit['t_low']))}, {points(float(mit['t_high']))}]"
    assert cells[8].endswith(f"({mc['a_only']} / {mc['b_only']})")
    assert cells[9] == f"[{points(boot['low'])}, {points(boot['high'])}]"
    assert mit_line in (out_dir / "compare.md").read_text()
    assert "compare.md, compare.csv" in out


def test_compare_rows_single_pair_and_mismatched_images(tmp_path, capsys):
    root = tmp_path / "outputs"
    write_run(root, "fne_0", "fne", 0, 0.8, split_id=0)
    write_run(root, "fc7_0", "fc7", 0, 0.7, split_id=0)
    write_run(root, "fne_dtd", "fne", 0, 0.8, dataset="dtd")
    write_run(root, "fc7_dtd", "fc7", 0, 0.7, dataset="dtd", indices=np.arange(N) + 10)
    out_dir = tmp_path / "r"
    code, _, err = run_report(
        capsys, str(root), "--rows", "method", "--compare", "fne", "fc7", "--resamples", "300", "--out", str(out_dir)
    )
    assert code == 0, err
    rows = {r["dataset"]: r for r in csv.DictReader(io.StringIO((out_dir / "compare.csv").read_text()))}
    mit = rows["mit67"]
    assert mit["pairs"] == "1" and mit["t_p"] == "" and mit["wilcoxon_p"] == ""
    labels, pa = load(root / "fne_0")
    _, pb = load(root / "fc7_0")
    assert float(mit["mcnemar_p"]) == pytest.approx(stats.mcnemar_exact(labels, pa, pb)["p_value"], rel=1e-5)
    boot = stats.paired_bootstrap(labels, pa, pb, "top1", K, resamples=300)
    assert float(mit["bootstrap_low"]) == pytest.approx(boot["low"], abs=1e-9)
    assert "one pair" in mit["notes"]
    dtd = rows["dtd"]
    assert dtd["mcnemar_p"] == "" and "different test images (test image indices differ" in dtd["notes"]


def test_compare_unknown_row_lists_the_rows(table_runs, tmp_path, capsys):
    code, out, err = run_report(
        capsys, str(table_runs), "--rows", "method", "--compare", "fne", "fc8", "--out", str(tmp_path / "r")
    )
    assert code == 2 and out == ""
    assert "no row 'fc8'" in err and "'fc7'" in err and "'fne'" in err
    assert not (tmp_path / "r").exists()  # nothing written on an error


def test_report_without_compare_writes_no_comparison(table_runs, tmp_path, capsys):
    out_dir = tmp_path / "r"
    code, out, _ = run_report(capsys, str(table_runs), "--rows", "method", "--out", str(out_dir))
    assert code == 0
    assert not (out_dir / "compare.md").exists() and "A = " not in out
    assert out.rstrip().endswith(f"written: {out_dir}/report.md, report.csv, report.tex, report.png")


def test_compare_warns_when_predictions_disagree_with_results(tmp_path, capsys):
    a = write_run(tmp_path, "a", "fne", 0, 0.8)
    b = write_run(tmp_path, "b", "fc7", 0, 0.7)
    record = json.loads((b / "results.json").read_text())
    record["metrics"]["test"]["top1"] += 0.05  # as if predictions.npz came from another run
    (b / "results.json").write_text(json.dumps(record))
    code, _, err = run_report(capsys, "compare", str(a), str(b), "--resamples", "100")
    assert code == 0
    assert f"warning: {b / 'results.json'} records test top1" in err and "predictions.npz gives" in err
    assert str(a / "results.json") not in err
