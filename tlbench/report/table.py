"""The report table: cells are mean ± std (sample std, n-1) over the results that share a row and a
column value and differ only by seed or split (tlbench.report.settings), with the count; results
that differ in another setting get rows of their own, labelled with it; the best mean per column is
marked."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.report.collect import field_value
from tlbench.report.settings import ABSENT, canonical, compared_settings, differing_keys, show


@dataclass
class Cell:
    values: list[float]
    results: list[dict[str, Any]] = field(default_factory=list)  # the runs behind `values`, same order

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def std(self) -> float:
        if self.n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


@dataclass
class ReportTable:
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    metric: str  # "headline" or top1 / mean_per_class
    row_key: str
    column_key: str
    row_base: dict[str, str] = field(default_factory=dict)  # row label -> its --rows value (label sans [settings])
    split_keys: list[str] = field(default_factory=list)  # settings that put runs of one cell in separate rows

    def best_rows(self, column: str) -> set[str]:
        """The rows with the highest mean in this column (several on a tie)."""
        means = {r: self.cells[(r, column)].mean for r in self.rows if (r, column) in self.cells}
        top = max(means.values(), default=None)
        return {r for r, m in means.items() if m == top}

    def text(self, row: str, column: str, percent: bool = True) -> str:
        cell = self.cells.get((row, column))
        if cell is None:
            return ""
        scale = 100.0 if percent else 1.0
        body = f"{scale * cell.mean:.1f}"
        if cell.n > 1:
            body += f"±{scale * cell.std:.1f}"
        return f"{body} (n={cell.n})" if cell.n > 1 else body

    def markdown(self) -> str:
        header = f"| {self.row_key} | " + " | ".join(self.columns) + " |"
        lines = [header, "|---" * (len(self.columns) + 1) + "|"]
        best = {c: self.best_rows(c) for c in self.columns}
        for row in self.rows:
            cells = [f"**{self.text(row, c)}**" if row in best[c] else self.text(row, c) for c in self.columns]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n" + self.notes()

    def notes(self) -> str:
        """Why some rows carry [settings]: the user may rather lay those keys out with --rows/--cols."""
        if not self.split_keys:
            return ""
        keys = ", ".join(self.split_keys)
        return (
            f"\nnote: runs that share a {self.row_key} and a {self.column_key} but differ in {keys} (not only by "
            "seed or split) are not averaged together: each setting has its own row, labelled [key=value]. "
            "To lay one of these keys out instead, pass it as --rows or --cols, or report fewer runs.\n"
        )

    def latex(self) -> str:
        spec = "l" + "c" * len(self.columns)
        best = {c: self.best_rows(c) for c in self.columns}
        lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
        lines.append(" & ".join([_tex(self.row_key), *map(_tex, self.columns)]) + " \\\\")
        lines.append("\\midrule")
        for row in self.rows:
            cells = []
            for c in self.columns:
                text = _tex(self.text(row, c)).replace("±", "$\\pm$")
                cells.append(f"\\textbf{{{text}}}" if row in best[c] and text else text)
            lines.append(" & ".join([_tex(row), *cells]) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Long format, one line per cell, values as fractions (not percent)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([self.row_key, self.column_key, "metric", "mean", "std", "n", "best"])
        best = {c: self.best_rows(c) for c in self.columns}
        for row in self.rows:
            for column in self.columns:
                cell = self.cells.get((row, column))
                if cell is not None:
                    writer.writerow(
                        [row, column, self.metric, f"{cell.mean:.6f}", f"{cell.std:.6f}", cell.n, row in best[column]]
                    )
        return buffer.getvalue()


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")


def metric_name(result: dict[str, Any], metric: str) -> str:
    """The metric a table of `metric` (headline, top1, mean_per_class) shows for this result."""
    return result.get("headline_metric", "top1") if metric == "headline" else metric


def metric_of(result: dict[str, Any], metric: str) -> float | None:
    value = result["metrics"]["test"].get(metric_name(result, metric))
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_NOT_SET = object()


def build_table(results: list[dict[str, Any]], row_key: str, column_key: str, metric: str) -> ReportTable:
    """`metric`: headline (each dataset's own), top1 or mean_per_class. Results without that metric
    are an error naming them: a silent gap would bias a mean. A null (or missing) row/column value
    is a row/column named `null`; a key that no result has is an error (a typo, most likely)."""
    for key in (row_key, column_key):
        if all(field_value(r, key, _NOT_SET) is _NOT_SET for r in results):
            raise TlbenchError(
                f"no result has {key!r}: row/column keys are method, dataset, model, strategy, seed or a "
                "dotted path into the resolved config (classifier.C, dataset.train_per_class, ...)"
            )
    values = [metric_of(r, metric) for r in results]
    missing = [r["_path"] for r, v in zip(results, values) if v is None]
    if missing:
        raise TlbenchError(
            f"{len(missing)} results lack the metric {metric!r} (e.g. {missing[:3]}); results of different "
            "metric sets or runs of another kind cannot share a table: pass --metric top1 (every result has "
            "it), or fewer paths"
        )
    raw = [(field_value(r, row_key), field_value(r, column_key)) for r in results]
    row_names = _names([row for row, _ in raw])
    column_names = _names([column for _, column in raw])
    keys = [(canonical(row), canonical(column)) for row, column in raw]
    settings = [compared_settings(r, [row_key, column_key]) for r in results]

    # A row's split keys: those on which the runs of any of its cells disagree.
    groups: dict[tuple[Any, Any], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    row_split: dict[Any, set[str]] = {}
    for (row, _), members in groups.items():
        row_split.setdefault(row, set()).update(differing_keys([settings[i] for i in members]))

    cells: dict[tuple[str, str], Cell] = {}
    row_base: dict[str, str] = {}
    row_order: dict[str, tuple] = {}
    for i, (row, column) in enumerate(keys):
        shown = [(k, settings[i].get(k, ABSENT)) for k in sorted(row_split[row])]
        shown = [(k, v) for k, v in shown if v is not ABSENT]  # absent keys are simply not named
        base = row_names[row]
        label = f"{base} [" + ", ".join(f"{k}={show(v)}" for k, v in shown) + "]" if shown else base
        row_base[label] = base
        row_order[label] = (_natural(base), tuple(_natural(show(v)) for _, v in shown))
        cell = cells.setdefault((label, column_names[column]), Cell([]))
        cell.values.append(values[i])  # type: ignore[arg-type]  # None refused above
        cell.results.append(results[i])
    rows = sorted(row_base, key=lambda label: (row_order[label], label))
    columns = sorted({c for _, c in cells}, key=_natural)
    split_keys = sorted(set().union(*row_split.values()))
    return ReportTable(rows, columns, cells, metric, row_key, column_key, row_base, split_keys)


def _names(values: list[Any]) -> dict[Any, str]:
    """Canonical value -> label: the value as written when every run writes it alike (1.0 stays
    1.0), else its canonical text (1 and 1.0 -> 1); None -> null."""
    spelled: dict[Any, set[str]] = {}
    for value in values:
        spelled.setdefault(canonical(value), set()).add("null" if value is None else str(value))
    return {key: next(iter(texts)) if len(texts) == 1 else show(key) for key, texts in spelled.items()}


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)
