"""The console summary a run ends with, as a user reads it in a terminal or a SLURM .out file
(issue 13, item 8): rates with their unit, no empty cache field, images that were evaluated, and a
results path that is never split over two lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlbench.results import Result, print_summary


def _result(tmp_path: Path, **changes) -> Result:
    values = dict(
        dataset="imagefolder",
        model="resnet18",
        strategy="fne",
        headline_metric="top1",
        metrics={"test": {"top1": 0.9, "mean_per_class": 0.85}},
        feature_dim=512,
        split_sizes={"train": 40, "test": 12},
        num_classes=3,
        timings={"extract": 4.25, "extract_images_per_s": 12.24, "fit": 0.5, "evaluate": 0.1, "total": 6.0},
        cache={"train": "miss", "test": "miss"},
        skipped_files={"test": ["/data/test/red/broken.jpg", "/data/test/blue/empty.png"]},
        seed=0,
        backbone={},
        taps=["layer4"],
        postprocess={},
        classifier={},
        config={},
        provenance={},
        run_dir=str(tmp_path / ("a-long-folder-name-" * 6) / "run"),
    )
    values.update(changes)
    return Result(**values)


def test_summary_in_a_log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _result(tmp_path)
    print_summary(result)  # stdout is not a terminal here, as in a SLURM .out file
    out = capsys.readouterr().out
    path = str(Path(result.run_dir) / "results.json")
    assert len(path) > 80
    assert f"results: {path}\n" in out  # on one line
    assert "extract images/s 12.2" in out and "12.2s" not in out  # a rate, not seconds
    assert "extract 4.2s" in out or "extract 4.3s" in out
    row = next(line for line in out.splitlines() if "test" in line and "90.00" in line)
    assert "10 (2 skipped)" in row  # 12 listed, 2 undecodable: 10 evaluated
    assert "2 unreadable images skipped" in out


def test_finetune_summary_has_no_empty_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _result(tmp_path, strategy="finetune", cache={}, taps=[], skipped_files={}, timings={"fit": 3.0})
    print_summary(result)
    out = capsys.readouterr().out
    assert "cache:" not in out and "0 taps" not in out
    assert "fit 3.0s" in out
    row = next(line for line in out.splitlines() if "90.00" in line)
    assert " 12 " in row and "skipped" not in row
