"""Ours vs a preset's paper numbers. A preset records them in its config as

    paper:
      title: "Garcia-Gasulla et al. 2018, ..., Table 2"   # printed with the comparison
      metric: top1                                         # of the numbers below (default top1)
      results:
        <method>: {<dataset>: {mean: 80.0, std: 0.6, metric: mean_per_class}}   # std, metric optional

and each cell is compared on the paper's metric (the cell's own, else the block's), recomputed from
the runs' metrics.test whatever metric the main table shows: a difference of metric is not a
difference of method. A block of another shape is ignored with a warning that names it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.report.settings import canonical
from tlbench.report.table import Cell, ReportTable, metric_name

PAPER_METRICS = ("top1", "mean_per_class")
BLOCK_KEYS = {"title", "metric", "results"}
CELL_KEYS = {"mean", "std", "metric"}
OTHER_METRIC = "†"  # marks a comparison on another metric than the main table's in that cell


@dataclass(frozen=True)
class Reference:
    mean: float  # percent
    std: float | None
    metric: str


@dataclass(frozen=True)
class PaperBlock:
    experiment: str
    title: str | None
    metric: str  # the block's default; a cell's Reference.metric may differ
    results: dict[str, dict[str, Reference]]


@dataclass
class Comparison:
    markdown: str | None = None  # None: nothing to compare
    warnings: list[str] = field(default_factory=list)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric(value: Any, where: str) -> str:
    if value not in PAPER_METRICS:
        raise ValueError(f"{where}metric is {value!r}, not one of {', '.join(PAPER_METRICS)}")
    return value


def parse_block(block: Any, experiment: str) -> PaperBlock:
    """A config.paper block in the shape above; ValueError saying what is wrong otherwise."""
    if not isinstance(block, dict):
        raise ValueError(f"it is a {type(block).__name__}, not a mapping")
    if "results" not in block:
        raise ValueError(
            "it has no `results`: the old shape paper.<method>.<dataset> (without the numbers' metric) is no "
            "longer read; expected paper: {title, metric, results: {<method>: {<dataset>: {mean, std, metric}}}}"
        )
    unknown = set(block) - BLOCK_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (expected {sorted(BLOCK_KEYS)})")
    title = block.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError("title is not a text")
    default = _metric(block.get("metric", "top1"), "")
    if not isinstance(block["results"], dict):
        raise ValueError("results is not a mapping of methods")
    results: dict[str, dict[str, Reference]] = {}
    for method, datasets in block["results"].items():
        if not isinstance(datasets, dict):
            raise ValueError(f"results.{method} is not a mapping of datasets")
        for dataset, cell in datasets.items():
            where = f"results.{method}.{dataset}"
            if not isinstance(cell, dict) or not _number(cell.get("mean")):
                raise ValueError(f"{where} has no numeric mean (expected {{mean, std, metric}}, got {cell!r})")
            if set(cell) - CELL_KEYS:
                raise ValueError(f"{where} has unknown keys {sorted(set(cell) - CELL_KEYS)}")
            std = cell.get("std")
            if std is not None and not _number(std):
                raise ValueError(f"{where}.std is {std!r}, not a number")
            metric = _metric(cell.get("metric", default), f"{where}.")
            results.setdefault(str(method), {})[str(dataset)] = Reference(
                float(cell["mean"]), None if std is None else float(std), metric
            )
    return PaperBlock(experiment, title, default, results)


def _experiment(result: dict[str, Any]) -> str:
    return str((result.get("config") or {}).get("experiment") or "no experiment")


def _blocks(table: ReportTable, warnings: list[str]) -> dict[str, PaperBlock | None]:
    """Each run's (by _path) parsed paper block, or None; one warning per distinct bad block."""
    parsed: dict[Any, PaperBlock | None] = {}
    bad: dict[Any, list[str]] = {}  # canonical block -> [reason, experiment, paths...]
    per_run: dict[str, PaperBlock | None] = {}
    for cell in table.cells.values():
        for result in cell.results:
            block = (result.get("config") or {}).get("paper")
            if not block:
                per_run[result["_path"]] = None
                continue
            key = (canonical(block), _experiment(result))
            if key not in parsed:
                try:
                    parsed[key] = parse_block(block, _experiment(result))
                except ValueError as exc:
                    parsed[key] = None
                    bad[key] = [str(exc), _experiment(result)]
            if key in bad:
                bad[key].append(result["_path"])
            per_run[result["_path"]] = parsed[key]
    for why, experiment, *paths in bad.values():
        warnings.append(
            f"ignored the paper numbers of experiment {experiment} ({len(paths)} runs, e.g. {paths[0]}): {why}"
        )
    return per_run


def paper_comparison(table: ReportTable) -> Comparison:
    """ "ours / paper (ours - paper)" per cell, on the paper's metric, when the table is method x
    dataset and its runs carry a preset's paper numbers. Runs of one cell that carry different
    numbers for it are an error naming their experiments."""
    out = Comparison()
    if (table.row_key, table.column_key) != ("method", "dataset"):
        return out
    blocks = _blocks(table, out.warnings)
    used: dict[tuple[str, str | None, str], None] = {}  # (experiment, title, metric), in order
    own_metric = other_metric = False
    shown_elsewhere: set[str] = set()
    lines = [
        "| method | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for row in table.rows:
        texts = []
        for column in table.columns:
            cell = table.cells.get((row, column))
            found: dict[Reference, list[tuple[PaperBlock, str]]] = {}
            for result in cell.results if cell else []:
                block = blocks[result["_path"]]
                reference = block.results.get(table.row_base[row], {}).get(column) if block else None
                if block and reference:
                    found.setdefault(reference, []).append((block, result["_path"]))
            if cell is None or not found:
                texts.append("")
                continue
            if len(found) > 1:
                (a, [(block_a, path_a), *_]), (b, [(block_b, path_b), *_]) = list(found.items())[:2]
                raise TlbenchError(
                    f"the runs of cell {row} / {column} carry different paper numbers: {a.mean} {a.metric} from "
                    f"experiment {block_a.experiment} ({path_a}) and {b.mean} {b.metric} from experiment "
                    f"{block_b.experiment} ({path_b}); report the runs of one preset at a time"
                )
            (reference, [(block, _), *_]) = next(iter(found.items()))
            used[(block.experiment, block.title, block.metric)] = None
            texts.append(_text(cell, reference))
            if reference.metric != block.metric:
                own_metric = True
                texts[-1] += f" [{reference.metric}]"
            table_metrics = {metric_name(r, table.metric) for r in cell.results}
            if table_metrics != {reference.metric}:
                other_metric = True
                shown_elsewhere |= table_metrics
                texts[-1] += f" {OTHER_METRIC}"
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    if not used:
        return out
    notes = [
        f"compared on the paper's metric: {metric} ({experiment}{': ' + title if title else ''})"
        for experiment, title, metric in used
    ]
    if own_metric:
        notes.append("[metric]: that cell's own metric, as the preset records it")
    if other_metric:
        notes.append(
            f"{OTHER_METRIC}: the table above shows {', '.join(sorted(shown_elsewhere))} in this cell; ours here "
            "is recomputed on the paper's metric"
        )
    out.markdown = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return out


def _text(cell: Cell, reference: Reference) -> str:
    values = [r["metrics"]["test"].get(reference.metric) for r in cell.results]
    values = [float(v) for v in values if _number(v)]
    if len(values) < len(cell.results):
        return f"{len(cell.results) - len(values)} of {len(cell.results)} runs lack {reference.metric}"
    ours = 100 * sum(values) / len(values)
    std = f"±{reference.std:g}" if reference.std is not None else ""
    return f"{ours:.1f} / {reference.mean:.1f}{std} ({ours - reference.mean:+.1f})"
