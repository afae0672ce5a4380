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
    # One C, but the runs of a column are on two datasets: not averaged together (they once were,
    # into 80.0±5.0 (n=4)); each dataset gets its own row, labelled with it.
    fne_mit = [0.80, 0.82, 0.87]
    mit = f"{100 * (statistics.mean(fne_mit) - 0.05):.1f}±{100 * statistics.stdev(fne_mit):.1f} (n=3)"
    assert "| classifier.C | fne | last_layer |" in stdout
    assert "| 1.0 [dataset.name=caltech101] | **86.0** | **87.0±2.8 (n=2)** |" in stdout
    assert f"| 1.0 [dataset.name=mit67] | {mit} | 70.0 |" in stdout
    assert "differ in dataset.name (not only by seed or split)" in stdout


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
    numbers = {"fc6": {"dtd": {"mean": 69.6}}, "fne": {"dtd": {"mean": 73.0}, "knots": {"mean": 74.1, "std": 6.9}}}
    paper = {"title": "FNE, Table 2", "metric": "top1", "results": numbers}
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


def write_run(
    root: Path,
    name: str,
    config: dict,
    top1: float,
    mean_per_class: float | None = None,
    headline: str = "top1",
    seed: int = 0,
) -> Path:
    """A results.json whose top-level fields come from `config` (dataset.name, strategy.name)."""
    folder = root / name
    folder.mkdir(parents=True)
    record = {
        "dataset": config["dataset"]["name"],
        "model": "vgg16",
        "strategy": config["strategy"]["name"],
        "seed": seed,
        "headline_metric": headline,
        "metrics": {"test": {"top1": top1, "mean_per_class": top1 if mean_per_class is None else mean_per_class}},
        "config": {"seed": seed, **config},
    }
    (folder / "results.json").write_text(json.dumps(record))
    return folder


def fc6(dataset: str, paper: dict | None = None, experiment: str = "fne_table", **dataset_keys) -> dict:
    config = {
        "dataset": {"name": dataset, **dataset_keys},
        "strategy": {"name": "last_layer", "layer": "fc6"},
        "classifier": {"C": 1.0},
        "experiment": experiment,
    }
    return {**config, "paper": paper} if paper is not None else config


FNE_PAPER = {
    "title": "Garcia-Gasulla et al. 2018, Table 2",
    "metric": "top1",
    "results": {
        "fc6": {
            "flowers102": {"mean": 89.5},
            "mit67": {"mean": 80.0},
            "pets": {"mean": 91.5, "metric": "mean_per_class"},  # a per-dataset protocol
        }
    },
}


@pytest.fixture
def fne_table_runs(tmp_path: Path) -> Path:
    """fc6 on three datasets: top-1 and mean per-class differ, two headlines are mean per-class."""
    root = tmp_path / "outputs"
    write_run(root, "flowers", fc6("flowers102", FNE_PAPER), 0.90, 0.85, headline="mean_per_class")
    write_run(root, "mit67", fc6("mit67", FNE_PAPER), 0.81, 0.78)
    write_run(root, "pets", fc6("pets", FNE_PAPER), 0.93, 0.92, headline="mean_per_class")
    return root


def test_paper_compared_on_its_metric_not_the_tables(fne_table_runs, tmp_path, capsys):
    code, stdout, err = run_report(
        capsys, str(fne_table_runs), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path / "r")
    )
    assert code == 0 and "warning" not in err
    table, comparison = stdout.split("ours / paper (ours - paper), test %, on the paper's metric:")
    # the table: each dataset's headline (mean per-class for flowers102 and pets)
    assert "| method | flowers102 | mit67 | pets |" in table
    assert "| fc6 | **85.0** | **81.0** | **92.0** |" in table
    # the comparison: flowers102 on the paper's top-1 (marked: not the table's metric), pets on its own
    assert "| fc6 | 90.0 / 89.5 (+0.5) † | 81.0 / 80.0 (+1.0) | 92.0 / 91.5 (+0.5) [mean_per_class] |" in comparison
    assert "compared on the paper's metric: top1 (fne_table: Garcia-Gasulla et al. 2018, Table 2)" in comparison
    assert "[metric]: that cell's own metric" in comparison
    assert "†: the table above shows mean_per_class in this cell" in comparison
    assert comparison.split("written:")[0].strip() in (tmp_path / "r" / "report.md").read_text()


def test_paper_metric_whatever_the_table_shows(fne_table_runs, tmp_path, capsys):
    code, stdout, _ = run_report(
        capsys, str(fne_table_runs), "--rows", "method", "--cols", "dataset", "--metric", "top1",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert code == 0
    assert "| fc6 | **90.0** | **81.0** | **93.0** |" in stdout
    # the same numbers as under --metric headline; now pets is the cell on another metric than the table's
    assert "| fc6 | 90.0 / 89.5 (+0.5) | 81.0 / 80.0 (+1.0) | 92.0 / 91.5 (+0.5) [mean_per_class] † |" in stdout
    assert "†: the table above shows top1 in this cell" in stdout


def test_old_or_malformed_paper_blocks_are_ignored_with_a_warning(tmp_path, capsys):
    root = tmp_path / "outputs"
    old = {"fc6": {"dtd": {"mean": 69.6}}}  # paper.<method>.<dataset>: which metric is unknown
    write_run(root, "old0", fc6("dtd", old, experiment="old_preset"), 0.70, seed=0)
    write_run(root, "old1", fc6("dtd", old, experiment="old_preset"), 0.72, seed=1)
    top5 = {"metric": "top1", "results": {"fc6": {"mit67": {"mean": 80.0, "metric": "top5"}}}}
    write_run(root, "bad", fc6("mit67", top5, experiment="typo_preset"), 0.81)
    code, stdout, err = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 0
    assert "| fc6 | **71.0±1.4 (n=2)** | **81.0** |" in stdout  # the table is still made
    assert "ours / paper" not in stdout
    assert "warning: ignored the paper numbers of experiment old_preset (2 runs, e.g. " in err
    assert "the old shape paper.<method>.<dataset>" in err
    assert "warning: ignored the paper numbers of experiment typo_preset (1 runs" in err
    assert "results.fc6.mit67.metric is 'top5'" in err


def test_different_paper_numbers_for_one_cell_are_refused(tmp_path, capsys):
    root = tmp_path / "outputs"
    before = {"results": {"fc6": {"dtd": {"mean": 69.6}}}}
    after = {"results": {"fc6": {"dtd": {"mean": 70.5}}}}  # the preset, edited between the runs
    a = write_run(root, "a", fc6("dtd", before), 0.70, seed=0)
    b = write_run(root, "b", fc6("dtd", after), 0.72, seed=1)
    code, stdout, err = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 2 and stdout == ""
    assert "the runs of cell fc6 / dtd carry different paper numbers" in err
    assert f"69.6 top1 from experiment fne_table ({a / 'results.json'})" in err
    assert f"70.5 top1 from experiment fne_table ({b / 'results.json'})" in err


def test_two_presets_are_shown_separately_each_with_its_numbers(tmp_path, capsys):
    root = tmp_path / "outputs"
    ours = {"title": "ours", "results": {"fc6": {"dtd": {"mean": 69.6}}}}
    theirs = {"title": "theirs", "metric": "mean_per_class", "results": {"fc6": {"dtd": {"mean": 65.0}}}}
    write_run(root, "a", fc6("dtd", ours, experiment="fne_table"), 0.70, 0.60)
    write_run(root, "b", fc6("dtd", theirs, experiment="other_table"), 0.70, 0.60)
    code, stdout, _ = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 0
    assert "| fc6 [experiment=fne_table] | 70.0 / 69.6 (+0.4) |" in stdout
    assert "| fc6 [experiment=other_table] | 60.0 / 65.0 (-5.0) † |" in stdout
    assert "compared on the paper's metric: top1 (fne_table: ours)" in stdout
    assert "compared on the paper's metric: mean_per_class (other_table: theirs)" in stdout


def finetune_config(**keys) -> dict:
    config = {
        "dataset": {"name": "mit67", "train_per_class": None, "batch_size": 64, "num_workers": 4, "root": "/a"},
        "strategy": {"name": "finetune", "epochs": 10},
        "classifier": {"C": 1.0, "random_state": 0},
        "trainer": {"devices": 1, "enable_progress_bar": True},
        "paths": {"output_dir": "outputs"},
    }
    for dotted, value in keys.items():
        group, key = dotted.split("__")
        config[group] = {**config[group], key: value}
    return config


def test_runs_of_other_settings_are_separate_rows_seeds_and_splits_averaged(tmp_path, capsys):
    root = tmp_path / "outputs"
    runs = [(0.1, 0, 0.60), (0.1, 1, 0.64), (10.0, 0, 0.70), (10.0, 1, 0.74)]
    for i, (c, seed, top1) in enumerate(runs):
        config = finetune_config(
            classifier__C=c,
            classifier__random_state=seed,
            dataset__split_id=seed,
            dataset__few_shot_seed=seed,
            dataset__fold_seed=seed,
            dataset__root=f"/data/node{i}",  # where the data was read, how, where the run wrote: not settings
            dataset__num_workers=i,
            trainer__enable_progress_bar=bool(i % 2),
            paths__output_dir=f"/scratch/{i}",
        )
        write_run(root, f"finetune{i}", config, top1, seed=seed)
    write_run(root, "fne", {"dataset": {"name": "mit67"}, "strategy": {"name": "fne"}}, 0.80)
    code, stdout, _ = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 0
    assert "| finetune [classifier.C=0.1] | 62.0±2.8 (n=2) |" in stdout
    assert "| finetune [classifier.C=10] | 72.0±2.8 (n=2) |" in stdout
    assert "| fne | **80.0** |" in stdout  # a row whose runs agree keeps its plain label
    assert "differ in classifier.C (not only by seed or split)" in stdout
    assert "pass it as --rows or --cols" in stdout


def test_few_shot_counts_and_training_batch_sizes_are_settings(tmp_path, capsys):
    root = tmp_path / "outputs"
    write_run(root, "k20", finetune_config(dataset__train_per_class=20), 0.50)
    write_run(root, "k60", finetune_config(dataset__train_per_class=60), 0.70)
    write_run(root, "b32", finetune_config(dataset__train_per_class=60, dataset__batch_size=32), 0.72)
    two_gpus = finetune_config(dataset__train_per_class=60, dataset__batch_size=32, trainer__devices=2)
    write_run(root, "b32_2", two_gpus, 0.72)
    # extraction: the batch size and the process count do not change the features, so one cell
    for i, (batch, devices) in enumerate([(32, 1), (128, 4)]):
        config = {
            "dataset": {"name": "mit67", "batch_size": batch},
            "strategy": {"name": "fne"},
            "trainer": {"devices": devices},
        }
        write_run(root, f"fne{i}", config, 0.80 + 0.02 * i, seed=i)
    code, stdout, _ = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 0
    assert "| finetune [dataset.batch_size=32, dataset.train_per_class=60, trainer.devices=1] | 72.0 |" in stdout
    assert "| finetune [dataset.batch_size=32, dataset.train_per_class=60, trainer.devices=2] | 72.0 |" in stdout
    assert "| finetune [dataset.batch_size=64, dataset.train_per_class=20, trainer.devices=1] | 50.0 |" in stdout
    assert "| finetune [dataset.batch_size=64, dataset.train_per_class=60, trainer.devices=1] | 70.0 |" in stdout
    assert "| fne | **81.0±1.4 (n=2)** |" in stdout
    assert "differ in dataset.batch_size, dataset.train_per_class, trainer.devices (not only" in stdout


def test_equal_values_of_another_type_share_a_cell(tmp_path, capsys):
    root = tmp_path / "outputs"
    for seed, (c, grid) in enumerate([(1, [1, 10]), (1.0, [1.0, 10.0])]):
        config = {"dataset": {"name": "dtd"}, "strategy": {"name": "fne"}, "classifier": {"C": c, "c_grid": grid}}
        write_run(root, f"run{seed}", config, 0.70 + 0.02 * seed, seed=seed)
    code, stdout, _ = run_report(capsys, str(root), "--rows", "method", "--cols", "dataset", "--out", str(tmp_path))
    assert code == 0
    assert "| fne | **71.0±1.4 (n=2)** |" in stdout and "note:" not in stdout
    code, stdout, _ = run_report(capsys, str(root), "--rows", "classifier.C", "--out", str(tmp_path))
    assert code == 0
    assert "| 1 | **71.0±1.4 (n=2)** |" in stdout  # one row, however C was written


def test_a_null_row_value_is_a_row(tmp_path, capsys):
    root = tmp_path / "outputs"
    for name, shots, top1 in (("all", None, 0.80), ("k20", 20, 0.50)):
        write_run(root, name, {"dataset": {"name": "dtd", "train_per_class": shots}, "strategy": {"name": "fne"}}, top1)
    code, stdout, _ = run_report(capsys, str(root), "--rows", "dataset.train_per_class", "--out", str(tmp_path))
    assert code == 0
    assert "| dataset.train_per_class | dtd |\n|---|---|\n| 20 | 50.0 |\n| null | **80.0** |" in stdout
    # a key that no result has is a typo, not a row of nulls
    code, _, err = run_report(capsys, str(root), "--rows", "dataset.train_per_clas", "--out", str(tmp_path))
    assert code == 2 and "no result has 'dataset.train_per_clas'" in err


def test_canonical_settings_compare_by_value():
    from tlbench.report.settings import canonical, differing_keys

    assert canonical(1) == canonical(1.0) and canonical({"a": [1, {"b": 2}]}) == canonical({"a": [1.0, {"b": 2.0}]})
    assert canonical(True) != canonical(1)  # a flag is not a number
    assert canonical([1, 2]) != canonical([2, 1]) and canonical(None) != canonical("null")
    assert differing_keys([{"C": canonical(1)}, {"C": canonical(1.0)}, {"C": canonical(1), "x": None}]) == {"x"}
