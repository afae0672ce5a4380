"""The report figure: grouped bars (one group per column, one bar per row) with std error bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt

from tlbench.report.table import ReportTable


def save_figure(table: ReportTable, path: Path) -> Path:
    width = 0.8 / max(len(table.rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(table.columns) + 2), 4.0))
    for i, row in enumerate(table.rows):
        xs, means, stds = [], [], []
        for j, column in enumerate(table.columns):
            cell = table.cells.get((row, column))
            if cell is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                means.append(100 * cell.mean)
                stds.append(100 * cell.std)
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=row)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right")
    metric = "headline metric" if table.metric == "headline" else table.metric
    ax.set_ylabel(f"test {metric} (%)")
    ax.set_ylim(0, 100)
    ax.legend(title=table.row_key, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
