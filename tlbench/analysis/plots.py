"""Figures and CSV files of the analyses (a run's Result.analyses): the accuracy of each layer alone
against the FNE of all layers, and accuracy against training images per class.

matplotlib loads inside the drawing functions, not with the module: the loggers use `flat_row`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
MAX_TICK_LABELS = 40  # more tap names than this overlap even at a small font: label every k-th
METRIC_LABELS = {"top1": "test top-1 (%)", "mean_per_class": "test mean per-class accuracy (%)"}
METHOD_LABELS = {"fne": "FNE", "last_layer": "last layer"}


# --- the data drawn, computed apart from matplotlib so that tests can check it ---


def _pct(value: float | None) -> float:
    return math.nan if value is None else 100.0 * float(value)


def layer_curve_series(record: Mapping[str, Any]) -> dict[str, Any]:
    """What plot_layer_curve draws, in percent (None intervals as NaN): `layers` and `prefix` as
    {"depth", "tap", "y", "low", "high"} lists, `full` and `last` as one such point each (or None)."""
    metric = record.get("metric", "top1")
    rows = record.get("rows", [])

    def series(kind: str) -> dict[str, list]:
        chosen = sorted((r for r in rows if r.get("kind") == kind), key=lambda r: r["depth"])
        return {
            "depth": [int(r["depth"]) for r in chosen],
            "tap": [str(r.get("tap", "")) for r in chosen],
            "y": [_pct(r["test"][metric]) for r in chosen],
            "low": [_pct(r.get("low")) for r in chosen],
            "high": [_pct(r.get("high")) for r in chosen],
        }

    layers, prefix = series("layer"), series("prefix")
    full_row = next((r for r in rows if r.get("kind") == "full"), None)
    full = None
    if full_row is not None:
        full = {
            "tap": str(full_row.get("tap") or f"all {len(layers['depth'])} layers"),
            "y": _pct(full_row["test"][metric]),
            "low": _pct(full_row.get("low")),
            "high": _pct(full_row.get("high")),
        }
    last = None
    if layers["depth"]:
        # the last layer is named by last_tap; without it, the deepest layer row
        taps = layers["tap"]
        i = taps.index(record["last_tap"]) if record.get("last_tap") in taps else len(taps) - 1
        last = {key: values[i] for key, values in layers.items()}
    return {"metric": metric, "layers": layers, "prefix": prefix, "full": full, "last": last}


def few_shot_series(record: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """What plot_few_shot draws: method -> {"x" (per_class_train), "label", "y", "low", "high"}, in
    percent, points in order of x; methods in first-seen order, points without a mean left out."""
    out: dict[str, dict[str, list]] = {}
    for point in record.get("points", []):
        if point.get("mean") is None:
            continue
        out.setdefault(point["method"], {"x": [], "label": [], "y": [], "low": [], "high": []})
    for method, series in out.items():
        points = [p for p in record["points"] if p["method"] == method and p.get("mean") is not None]
        for p in sorted(points, key=lambda p: float(p["per_class_train"])):
            series["x"].append(float(p["per_class_train"]))
            series["label"].append(str(p.get("label", p.get("shots"))))
            series["y"].append(_pct(p["mean"]))
            series["low"].append(_pct(p.get("low")))
            series["high"].append(_pct(p.get("high")))
    return out


def score_series(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What plot_layer_scores draws: per predictor (depth, then each score) the layers' values `x`,
    their test accuracy `y` in percent, tap names, and Kendall's tau with its interval and p-value."""
    from tlbench.analysis.transferability import module_depth

    metric = record.get("metric", "top1")
    layers = sorted((r for r in record.get("rows", []) if r.get("kind") == "layer"), key=lambda r: r["depth"])
    depth = module_depth([str(r.get("tap", "")) for r in layers])  # as the baseline ranks them
    out: dict[str, dict[str, Any]] = {}
    upper = {c["predictor"]: c.get("kendall_tau") for c in record.get("score_correlations_upper", [])}
    for c in record.get("score_correlations", []):
        name = c["predictor"]
        # an undefined score (None) is a gap: NaN, which matplotlib leaves out
        x = depth if name == "depth" else [math.nan if r["scores"][name] is None else r["scores"][name] for r in layers]
        out[name] = {
            "x": x,
            "y": [_pct(r["test"][metric]) for r in layers],
            "tap": [str(r.get("tap", "")) for r in layers],
            **{k: c.get(k) for k in ("kendall_tau", "low", "high", "p_value", "baseline")},
            "upper_tau": upper.get(name),
        }
    return out


# --- the figures ---


def draw_layer_curve(record: Mapping[str, Any]) -> Figure:
    """The layer-curve figure, not saved; the caller closes it (plt.close)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    import numpy as np

    s = layer_curve_series(record)
    layers, prefix, full, last = s["layers"], s["prefix"], s["full"], s["last"]
    n = len(layers["depth"])
    fig, ax = plt.subplots(figsize=(min(max(8.0, 0.22 * n + 3), 20.0), 5.0))
    if n:
        line = ax.plot(layers["depth"], layers["y"], "o-", ms=3, lw=1.5, label="each layer alone", gid="layers")
        _band(ax, np.array(layers["depth"]), layers["low"], layers["high"], line[0].get_color(), "layers_band")
    if prefix["depth"]:
        line = ax.plot(prefix["depth"], prefix["y"], "s-", ms=3, lw=1.2, label="layers 1..i together", gid="prefix")
        _band(ax, np.array(prefix["depth"]), prefix["low"], prefix["high"], line[0].get_color(), "prefix_band")
    if full is not None:
        label = f"FNE, {full['tap']}: {full['y']:.1f}%"
        ax.axhline(full["y"], ls="--", lw=1.5, color="black", label=label, gid="full")
        if not (math.isnan(full["low"]) or math.isnan(full["high"])):
            ax.axhspan(full["low"], full["high"], color="black", alpha=0.08, lw=0, gid="full_band")
    if last is not None:
        ax.plot([last["depth"]], [last["y"]], "*", ms=14, color="tab:red", zorder=5, gid="last", label="last layer")
        ax.annotate(
            f"last layer: {last['y']:.1f}%",
            (last["depth"], last["y"]),
            xytext=(-24, -30),
            textcoords="offset points",
            ha="right",
            fontsize="small",
            color="tab:red",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            arrowprops={"arrowstyle": "->", "color": "tab:red", "lw": 0.8},
        )
    if n:
        # every k-th tap name (and always the last) when there are too many to read
        k = max(1, math.ceil(n / MAX_TICK_LABELS))
        shown = [i for i in range(n) if i % k == 0 or i == n - 1]
        ax.set_xticks([layers["depth"][i] for i in shown], [layers["tap"][i] for i in shown])
        ax.tick_params(axis="x", labelrotation=70, labelsize=6)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
        ax.set_xlim(min(layers["depth"]) - 0.5, max(layers["depth"]) + 0.5)
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel(METRIC_LABELS.get(s["metric"], f"test {s['metric']} (%)"))
    ax.set_title(f"{record.get('dataset', '?')} · {record.get('model', '?')}: accuracy of each layer alone")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    _note(fig, _interval(record), _comparison_lines(record))
    return fig


def draw_few_shot(record: Mapping[str, Any]) -> Figure:
    """The few-shot figure, not saved; the caller closes it (plt.close)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import NullFormatter

    series = few_shot_series(record)
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    ticks: dict[float, str] = {}
    for method, s in series.items():
        line = ax.plot(s["x"], s["y"], "o-", ms=4, lw=1.5, label=METHOD_LABELS.get(method, method), gid=method)
        _band(ax, np.array(s["x"]), s["low"], s["high"], line[0].get_color(), f"{method}_band")
        ticks.update(zip(s["x"], s["label"]))
    ax.set_xscale("log")
    if ticks:
        xs = sorted(ticks)
        ax.set_xticks(xs, [ticks[x] for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-scale minor labels would clutter the shots
        ax.minorticks_off()
    ax.set_xlabel("training images per class")
    metric = record.get("metric", "top1")
    ax.set_ylabel(METRIC_LABELS.get(metric, f"test {metric} (%)"))
    ax.set_title(
        f"{record.get('dataset', '?')} · {record.get('model', '?')}: accuracy against training images per class"
    )
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small", loc="lower right")
    _note(fig, _interval(record), [])
    return fig


def draw_layer_scores(record: Mapping[str, Any]) -> Figure:
    """One panel per predictor (the depth baseline first, then each score): the layers' probe accuracy
    against the predictor, titled with Kendall's tau; not saved, the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = score_series(record)
    n = max(1, len(series))
    n_upper = next((c.get("n") for c in record.get("score_correlations_upper", [])), None)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.5, 4.0), squeeze=False)
    metric = record.get("metric", "top1")
    for ax, (name, s) in zip(axes[0], series.items(), strict=False):
        ax.scatter(s["x"], s["y"], s=14, c=range(len(s["x"])), cmap="viridis", gid=name)
        tau = s["kendall_tau"]
        title = f"{name}{' (baseline)' if s['baseline'] else ''}\n"
        title += "τ undefined" if tau is None else f"τ = {tau:+.2f}"
        if tau is not None and s["low"] is not None:
            title += f" ({s['low']:+.2f}..{s['high']:+.2f})"
        if s["upper_tau"] is not None:
            title += f"\nupper half: τ = {s['upper_tau']:+.2f}"
        ax.set_title(title, fontsize="small")
        ax.set_xlabel("layer depth" if name == "depth" else name, fontsize="small")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(METRIC_LABELS.get(metric, f"test {metric} (%)"), fontsize="small")
    fig.suptitle(
        f"{record.get('dataset', '?')} · {record.get('model', '?')}: transferability scores of each layer "
        "against its probe accuracy (colour: depth)",
        fontsize="small",
    )
    interval = ((record.get("protocol") or {}).get("scores") or {}).get("interval")
    lines = [f"upper half: the {n_upper} layers at or above the median accuracy"] if n_upper else []
    _note(fig, None if interval is None else str(interval), lines)
    return fig


def plot_layer_scores(record: Mapping[str, Any], path: Path) -> Path:
    """A PNG of each layer's probe accuracy against each transferability score and its depth."""
    return _save(draw_layer_scores(record), Path(path))


def plot_layer_curve(record: Mapping[str, Any], path: Path) -> Path:
    """A PNG of the accuracy of each layer alone, the FNE of all layers and the last layer."""
    return _save(draw_layer_curve(record), Path(path))


def plot_few_shot(record: Mapping[str, Any], path: Path) -> Path:
    """A PNG of accuracy against training images per class, one line per method."""
    return _save(draw_few_shot(record), Path(path))


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def _band(ax: Any, xs: Any, low: list[float], high: list[float], color: str, gid: str) -> None:
    """The low..high interval shaded; NaN (no interval) leaves a gap."""
    import numpy as np

    lo, hi = np.array(low, dtype=float), np.array(high, dtype=float)
    ok = ~(np.isnan(lo) | np.isnan(hi))
    if ok.any():
        ax.fill_between(xs, lo, hi, where=ok, color=color, alpha=0.2, lw=0, gid=gid)
    # a point whose neighbours have no interval makes no area: its interval as a bar instead
    alone = ok & ~np.concatenate([[False], ok[:-1]]) & ~np.concatenate([ok[1:], [False]])
    if alone.any():
        ax.vlines(np.asarray(xs)[alone], lo[alone], hi[alone], color=color, alpha=0.5, lw=2, gid=f"{gid}_alone")


def _interval(record: Mapping[str, Any]) -> str | None:
    interval = (record.get("protocol") or {}).get("interval")
    if interval is None:  # few-shot points carry their own description
        interval = next((p.get("interval") for p in record.get("points", []) if p.get("interval")), None)
    return None if interval is None else str(interval)


def _comparison_lines(record: Mapping[str, Any]) -> list[str]:
    """One line per comparison (at most 3): the difference in points, its interval and p-value."""
    lines = []
    for c in record.get("comparisons", [])[:3]:
        if c.get("difference") is None:
            continue
        text = f"{c.get('a')} − {c.get('b')}: {100 * c['difference']:+.1f} points"
        if c.get("low") is not None and c.get("high") is not None:
            text += f" ({100 * c['low']:+.1f}..{100 * c['high']:+.1f})"
        if c.get("p_value") is not None:
            text += f", p = {c['p_value']:.2g}"
        lines.append(text)
    return lines


def _note(fig: Figure, interval: str | None, lines: list[str]) -> None:
    """Small text under the axes (the interval method, the comparisons), wrapped to the figure's width;
    the layout leaves room for it."""
    import textwrap

    parts = ([f"intervals: {interval}"] if interval else []) + (["   ·   ".join(lines)] if lines else [])
    width = int(fig.get_figwidth() * 17)  # characters of 7-point text per inch, roughly
    wrapped = [line for part in parts for line in textwrap.wrap(part, width)]
    if wrapped:
        fig.text(0.01, 0.005, "\n".join(wrapped), fontsize=7, color="dimgray", ha="left", va="bottom", gid="note")
    bottom = (0.01 + 0.11 * len(wrapped) / fig.get_figheight()) if wrapped else 0.0  # 8 points a line
    fig.tight_layout(rect=(0, bottom, 1, 1))


# --- CSV ---


def flat_row(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as "test.top1" columns, lists as ";"-joined text; other values as they are."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_row(value, name + "."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ";".join("" if v is None else str(v) for v in value)
        else:
            flat[name] = value
    return flat


def flat_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the flat rows' keys, in first-seen order (stable across runs)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_rows_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The rows as a CSV (flattened by flat_row); a value a row lacks, and None, is left empty."""
    flat = [flat_row(row) for row in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=flat_columns(flat), restval="")
        writer.writeheader()
        writer.writerows(flat)
    tmp.replace(path)
    return path
