"""The report table: cells are mean ± std (sample std, n-1) over every result that shares a row and
a column value (seeds, splits), with the count; the best mean per column is marked."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.report.collect import field_value


@dataclass
class Cell:
    values: list[float]

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
        return "\n".join(lines) + "\n"

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


def metric_of(result: dict[str, Any], metric: str) -> float | None:
    name = result.get("headline_metric", "top1") if metric == "headline" else metric
    value = result["metrics"]["test"].get(name)
    return float(value) if isinstance(value, (int, float)) else None


def build_table(results: list[dict[str, Any]], row_key: str, column_key: str, metric: str) -> ReportTable:
    """`metric`: headline (each dataset's own), top1 or mean_per_class. Results without that metric,
    or without a row/column value, are an error naming them: a silent gap would bias a mean."""
    cells: dict[tuple[str, str], Cell] = {}
    missing = []
    for result in results:
        row, column, value = field_value(result, row_key), field_value(result, column_key), metric_of(result, metric)
        if row is None or column is None or value is None:
            missing.append(result["_path"])
            continue
        cells.setdefault((str(row), str(column)), Cell([])).values.append(value)
    if missing:
        raise TlbenchError(
            f"{len(missing)} results lack the metric {metric!r} or a value for {row_key!r}/{column_key!r} "
            f"(e.g. {missing[:3]}); results of different metric sets or runs of another kind cannot share a "
            "table: pass --metric top1 (every result has it), other --rows/--cols, or fewer paths"
        )
    rows = sorted({r for r, _ in cells}, key=_natural)
    columns = sorted({c for _, c in cells}, key=_natural)
    return ReportTable(rows, columns, cells, metric, row_key, column_key)


def _natural(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def paper_comparison(table: ReportTable, results: list[dict[str, Any]]) -> str | None:
    """ "ours / paper (difference)" per cell, when the results carry a preset's paper numbers
    (config.paper.<method>.<dataset>) and the table is method x dataset; None otherwise."""
    if (table.row_key, table.column_key) != ("method", "dataset"):
        return None
    paper: dict[str, Any] = {}
    for result in results:
        paper.update(result.get("config", {}).get("paper") or {})
    if not paper:
        return None
    lines = [
        "| method | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for row in table.rows:
        cells = []
        for column in table.columns:
            cell, reference = table.cells.get((row, column)), (paper.get(row) or {}).get(column)
            if cell is None or reference is None:
                cells.append("")
                continue
            ours, theirs = 100 * cell.mean, float(reference["mean"])
            std = f"±{reference['std']}" if reference.get("std") is not None else ""
            cells.append(f"{ours:.1f} / {theirs:.1f}{std} ({ours - theirs:+.1f})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
