"""The result record every run ends with: results.json in the run directory and a console table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich loads when a summary is printed, not with the Result (the report, the sweep callback)
    from rich.console import Console

RESULTS_FILE = "results.json"


@dataclass
class Result:
    dataset: str
    model: str
    strategy: str
    headline_metric: str  # "top1" or "mean_per_class": the dataset's default
    metrics: dict[str, dict[str, float]]  # split -> {"top1": ..., "mean_per_class": ...}
    feature_dim: int
    split_sizes: dict[str, int]  # images listed per split
    num_classes: int
    timings: dict[str, float]  # seconds: extract, fit, evaluate, total
    cache: dict[str, str]  # split -> "hit" or "miss"
    skipped_files: dict[str, list[str]]  # split -> images that could not be decoded
    seed: int
    backbone: dict[str, Any]
    taps: list[str]
    postprocess: dict[str, Any]
    classifier: dict[str, Any]
    config: dict[str, Any]
    provenance: dict[str, Any]
    run_dir: str = ""
    layout: list[tuple[str, int]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # fine-tuning: one row per epoch
    world_size: int = 1  # processes (ranks) that extracted or trained; 1 when every split was cached
    # split -> the rows of its source split that it is (a few-shot draw, a validation holdout): settings,
    # row count and a digest of the rows; the rows themselves are in subsets.npz in the run directory
    subsets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # analyses fitted on this run's features (tlbench/analysis/): name -> {"protocol": ..., ...}
    analyses: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> float:
        return self.metrics["test"][self.headline_metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Outcome:
    """What a strategy's pipeline measured; run.py adds what every run shares (dataset, model, config,
    provenance, ...) to make the one Result."""

    metrics: dict[str, dict[str, float]]
    feature_dim: int
    timings: dict[str, float]  # seconds of this strategy's phases; run.py adds the total
    classifier: dict[str, Any]
    cache: dict[str, str] = field(default_factory=dict)
    skipped_files: dict[str, list[str]] = field(default_factory=dict)
    taps: list[str] = field(default_factory=list)
    postprocess: dict[str, Any] = field(default_factory=dict)
    layout: list[tuple[str, int]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    world_size: int = 1
    analyses: dict[str, Any] = field(default_factory=dict)


def write_results(result: Result, run_dir: str | Path) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    tmp.replace(path)
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


def print_summary(result: Result, console: Console | None = None) -> None:
    """The table of a finished run. Not on a terminal (a SLURM .out file) rich would wrap at 80
    columns and split the results path: lines are printed unwrapped there."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 160))
    table = Table(title=f"tlbench · {result.dataset} · {result.model} · {result.strategy}")
    for column in ("split", "images", "top-1 %", "mean per-class %"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, values in result.metrics.items():
        table.add_row(
            split,
            _images(result, split),
            f"{100 * values['top1']:.2f}",
            f"{100 * values['mean_per_class']:.2f}",
        )
    console.print(table)
    parts = []
    if result.taps:
        parts.append(f"features: {result.feature_dim} dims from {len(result.taps)} taps")
    if result.cache:
        parts.append("cache: " + ", ".join(f"{s} {v}" for s, v in result.cache.items()))
    parts.append(", ".join(_timing(k, v) for k, v in result.timings.items()))
    skipped = sum(len(v) for v in result.skipped_files.values())
    if skipped:
        parts.append(f"[yellow]{skipped} unreadable images skipped (listed in results.json)[/yellow]")
    console.print(" · ".join(parts), soft_wrap=True)
    console.print(f"results: {Path(result.run_dir) / RESULTS_FILE}", soft_wrap=True, highlight=False)


def _images(result: Result, split: str) -> str:
    """The images evaluated: those listed, less the undecodable ones skipped."""
    listed = result.split_sizes.get(split)
    if listed is None:
        return ""
    skipped = len(result.skipped_files.get(split, []))
    return f"{listed - skipped} ({skipped} skipped)" if skipped else str(listed)


def _timing(key: str, value: float) -> str:
    if key.endswith("_per_s"):  # a rate, e.g. extract_images_per_s
        what = key.removesuffix("_per_s").replace("_", " ")
        return f"{what}/s {value:.1f}"
    return f"{key} {value:.1f}s"
