"""Few-shot curves: accuracy against training images per class, for several methods that share one
extraction (the FNE, the last layer, one chosen layer), with an interval per point.

For every k in `shots` and every seed, k training images per class are drawn (data/subsets.py
per_class_subset, the draw `dataset.train_per_class=k dataset.few_shot_seed=seed` makes) from the
readable training rows; each method's post-processing is fitted on those rows and its classifier
trained on them, then evaluated on the whole test split. A point is the mean over the seeds with a
Student t interval (the spread of the draws, for this test set); a point with one draw (every
training image) gets a percentile bootstrap interval over the test images instead. Methods are
compared per k with a paired test over the seeds (the same draws for both), or on one draw with
McNemar's exact test and a paired bootstrap. It tests the seed's claim "the FNE works with little
data" on the run's own data. Costs fits, never a forward pass."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlbench.analysis.probe import ProbeResult, columns_of, fit_probe, rows_of
from tlbench.data.subsets import per_class_subset
from tlbench.embedding.store import FeatureSet
from tlbench.embedding.views import tap_columns
from tlbench.errors import ConfigError
from tlbench.stats import bootstrap_interval, compare_on_images, mean_interval, paired_test

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """A strategy that reads some columns of the extraction: which, and their post-processing."""

    name: str
    columns: slice
    layout: list[tuple[str, int]]
    postprocess: dict[str, Any]


def check_method_names(names: Sequence[str], taps: Sequence[str]) -> None:
    """Before the extraction: every name is fne, last_layer or layer:<one of the taps>."""
    if not names:
        raise ConfigError("analysis.few_shot.methods is empty: name fne, last_layer or layer:<tap>")
    for name in names:
        tap = name.removeprefix("layer:") if name.startswith("layer:") else None
        if name in ("fne", "last_layer") or (tap is not None and tap in taps):
            continue
        raise ConfigError(
            f"analysis.few_shot.methods: unknown method {name!r}; use fne (every tap), last_layer (the last "
            f"tap, with the last_layer strategy's post-processing) or layer:<tap>, a tap of this run, e.g. "
            f"{', '.join(f'layer:{t}' for t in list(taps)[:5])}{' ...' if len(taps) > 5 else ''}"
        )
    if "fne" in names and len(taps) < 2:
        raise ConfigError(
            "analysis.few_shot.methods has fne, and this run extracts one tap: run strategy=fne (one "
            "extraction of every layer serves the FNE, the last layer and any single layer)"
        )


def resolve_methods(
    names: Sequence[str],
    layout: list[tuple[str, int]],
    fne_postprocess: dict[str, Any],
    last_layer_postprocess: dict[str, Any],
) -> list[Method]:
    taps = dict(tap_columns(layout))
    widths = dict(layout)
    methods = []
    for name in names:
        if name == "fne":
            methods.append(Method(name, slice(0, sum(widths.values())), list(layout), fne_postprocess))
        elif name == "last_layer":
            tap = layout[-1][0]
            methods.append(Method(name, taps[tap], [(tap, widths[tap])], last_layer_postprocess))
        else:
            tap = name.removeprefix("layer:")
            methods.append(Method(name, taps[tap], [(tap, widths[tap])], fne_postprocess))
    return methods


def few_shot_curve(
    features: dict[str, FeatureSet],
    methods: list[Method],
    shots: Sequence[int | None],
    seeds: Sequence[int],
    make_classifier: Callable[[], Any],
    metric: str,
    num_classes: int,
    classes: list[str],
    confidence: float = 0.95,
    test: str = "t",
    resamples: int = 1000,
    reuse: dict[str, ProbeResult] | None = None,
) -> dict[str, Any]:
    """The record of the few-shot curves (results.json `analyses.few_shot`). `shots`: k per class,
    None for every training image; `reuse`: a method's fit on every training image already made
    (the run's own)."""
    train = features["train"]
    reuse = reuse or {}
    t0 = time.perf_counter()
    points: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for k in shots:
        label = "all" if k is None else str(k)
        draws = [np.arange(len(train.labels))] if k is None else _draws(train.labels, k, seeds, classes)
        if len({d.tobytes() for d in draws}) == 1:  # k at or above every class's size: one draw, not n seeds
            draws = draws[:1]
        per_class = float(np.mean(np.bincount(train.labels[draws[0]])[np.unique(train.labels[draws[0]])]))
        results: dict[str, list[ProbeResult]] = {}
        for method in methods:
            fits: dict[str, ProbeResult] = {}  # one fit per distinct draw
            results[method.name] = []
            for rows in draws:
                digest = hashlib.sha256(rows.tobytes()).hexdigest()
                if digest not in fits:
                    if k is None and method.name in reuse:
                        fits[digest] = reuse[method.name]
                    else:
                        subset = {**features, "train": rows_of(train, rows)} if k is not None else features
                        sliced = {s: columns_of(fs, method.columns, method.layout) for s, fs in subset.items()}
                        fits[digest] = fit_probe(sliced, make_classifier, num_classes, postprocess=method.postprocess)
                results[method.name].append(fits[digest])
            values = [r.metrics["test"][metric] for r in results[method.name]]
            point = {"method": method.name, "shots": k, "label": label, "per_class_train": round(per_class, 3)}
            point["values"] = values
            point.update(
                _interval(
                    values, results[method.name][0], features["test"].labels, metric, num_classes, confidence, resamples
                )
            )
            points.append(point)
            log.info(
                "few-shot %s, %s per class: test %s %.4f [%s, %s]",
                method.name,
                label,
                metric,
                point["mean"],
                _fmt(point["low"]),
                _fmt(point["high"]),
            )
        first = methods[0].name
        for other in methods[1:]:
            comparisons.append(
                _compare(
                    first,
                    other.name,
                    k,
                    label,
                    results[first],
                    results[other.name],
                    features["test"].labels,
                    metric,
                    num_classes,
                    test,
                    confidence,
                    resamples,
                )
            )
    return {
        "metric": metric,
        "points": points,
        "comparisons": comparisons,
        "protocol": {
            "shots": [k for k in shots],
            "seeds": list(seeds),
            "draw": "k training images per class with each seed (data/subsets.py per_class_subset, as "
            "dataset.train_per_class=k dataset.few_shot_seed=seed); a class with fewer keeps all",
            "methods": {
                m.name: {
                    "taps": [t for t, _ in m.layout] if len(m.layout) < 3 else f"{len(m.layout)} taps",
                    "columns": m.columns.stop - m.columns.start,
                    "postprocess": m.postprocess,
                }
                for m in methods
            },
            "statistics": "post-processing fitted on each draw's training rows",
            "evaluated_on": f"the whole test split ({len(features['test'].labels)} images)",
            "metric": metric,
            "interval": f"Student t over the seeds' draws, {round(100 * confidence)}%; one draw (every training "
            f"image): percentile bootstrap over the test images, {resamples} resamples",
            "comparison": f"paired {'t test' if test == 't' else 'Wilcoxon signed-rank test'} over the seeds "
            f"(same draws for both methods); one draw: McNemar's exact test and a paired bootstrap",
        },
        "timings": {"fits": round(time.perf_counter() - t0, 3)},
    }


def _draws(labels: np.ndarray, k: int, seeds: Sequence[int], classes: list[str]) -> list[np.ndarray]:
    return [per_class_subset(labels, k, seed, classes=classes) for seed in seeds]


def _interval(
    values: list[float],
    first: ProbeResult,
    labels: np.ndarray,
    metric: str,
    num_classes: int,
    confidence: float,
    resamples: int,
) -> dict[str, Any]:
    if len(values) >= 2:
        interval = mean_interval(values, confidence)
        return {
            "mean": interval["mean"],
            "low": interval["low"],
            "high": interval["high"],
            "interval": interval["method"],
        }
    boot = bootstrap_interval(labels, first.predictions["test"], metric, num_classes, confidence, resamples)
    return {"mean": values[0], "low": boot["low"], "high": boot["high"], "interval": boot["method"]}


def _compare(
    a: str,
    b: str,
    k: int | None,
    label: str,
    results_a: list[ProbeResult],
    results_b: list[ProbeResult],
    labels: np.ndarray,
    metric: str,
    num_classes: int,
    test: str,
    confidence: float,
    resamples: int,
) -> dict[str, Any]:
    base = {"a": a, "b": b, "shots": k, "label": label, "metric": metric, "n": len(results_a)}
    if len(results_a) >= 2:
        values_a = [r.metrics["test"][metric] for r in results_a]
        values_b = [r.metrics["test"][metric] for r in results_b]
        paired = paired_test(values_a, values_b, test=test, confidence=confidence)
        return {
            **base,
            **{
                key: paired[key]
                for key in ("mean_difference", "low", "high", "p_value", "effect_size", "effect_size_name", "method")
            },
        }
    pa, pb = results_a[0].predictions["test"], results_b[0].predictions["test"]
    both = compare_on_images(labels, pa, pb, metric, num_classes, confidence, resamples)
    return {**base, "mean_difference": both.pop("difference"), **both}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
