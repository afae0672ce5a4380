"""Uncertainty and significance for transfer-learning results: intervals of a metric over test images
(percentile bootstrap) or over repeats (Student t), and paired comparisons of two methods, on the
same test images (McNemar, paired bootstrap) or on the same splits/seeds (paired t, Wilcoxon).

Pure numpy/scipy. Accuracies are fractions (0.81), as in results.json."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

METRICS = ("top1", "mean_per_class")

# Elements of one (resamples x images) index chunk. The mean_per_class path holds about four int64
# arrays of this size at once, so 4M elements keep a chunk near 130 MB whatever N and R are.
CHUNK_ELEMENTS = 4_000_000

# Differences smaller than this (relative to their size) are taken as equal: a - b of accuracies read
# back from JSON can differ in the last bit, which would otherwise give a t statistic of 1e15.
_TIE_TOLERANCE = 1e-12


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _label_arrays(labels: Any, *predictions: Any) -> tuple[np.ndarray, ...]:
    """1-D int64 arrays of one length, at least one image."""
    arrays = [np.asarray(a) for a in (labels, *predictions)]
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"labels and predictions must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"labels and predictions must be integer class indices, got dtype {a.dtype}")
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"labels and predictions differ in length: {lengths}")
    if lengths[0] == 0:
        raise ValueError("no test images (empty labels)")
    return tuple(a.astype(np.int64, copy=False) for a in arrays)


def _check_metric(metric: str, labels: np.ndarray, num_classes: int) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: expected one of {', '.join(METRICS)}")
    if metric == "mean_per_class" and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, got {labels.min()}..{labels.max()}"
        )


def metric_value(labels: Any, predictions: Any, metric: str, num_classes: int) -> float:
    """top1: the fraction of images predicted right; mean_per_class: the mean over the classes present
    in `labels` of each class's accuracy (as tlbench.metrics.classification_metrics)."""
    labels, predictions = _label_arrays(labels, predictions)
    _check_metric(metric, labels, num_classes)
    correct = labels == predictions
    if metric == "top1":
        return float(correct.mean())
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[correct], minlength=num_classes)
    present = counts > 0
    return float(np.mean(hits[present] / counts[present]))


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Student-t interval of the mean over n independent repeats (few-shot draws, seeds, splits):
    mean ± t_{(1+c)/2, n-1} · s / √n with s the sample std (ddof=1), as scipy.stats.t.interval.
    One value has no interval (low = high = None); equal values give low = high = mean."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_interval got non-finite values: {x[~np.isfinite(x)].tolist()}")
    mean = float(x.mean())
    if n == 1:
        return {
            "mean": mean,
            "low": None,
            "high": None,
            "std": None,
            "n": 1,
            "method": "a single value has no interval (Student t needs n >= 2 repeats)",
        }
    if np.ptp(x) == 0:  # equal values: x.std() could be 1e-17 rather than 0, and the mean off by a bit
        mean, std = float(x[0]), 0.0
    else:
        std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "std": std,
        "n": n,
        "method": f"Student t over {n} repeats, {_percent(confidence)}",
    }


def _chunk_rows(n_images: int) -> int:
    return max(1, CHUNK_ELEMENTS // n_images)


def _resampled_metrics(
    labels: np.ndarray,
    corrects: list[np.ndarray],
    metric: str,
    num_classes: int,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """(len(corrects), resamples): the metric of each `corrects[j]` (per-image right/wrong) on the
    same bootstrap resamples of the images. Resamples are drawn in chunks of rows from one generator,
    so the result does not depend on the chunk size."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    out = np.empty((len(corrects), resamples), dtype=np.float64)
    rows = _chunk_rows(n)
    for start in range(0, resamples, rows):
        r = min(rows, resamples - start)
        idx = rng.integers(0, n, size=(r, n))
        if metric == "top1":
            for j, correct in enumerate(corrects):
                out[j, start : start + r] = correct[idx].mean(axis=1)
            continue
        # Per-class counts of all resamples at once: resample i's labels are offset by i * K, so one
        # bincount of length r * K holds every (resample, class) count.
        offset = labels[idx]
        offset += (np.arange(r, dtype=np.int64) * num_classes)[:, None]
        counts = np.bincount(offset.ravel(), minlength=r * num_classes).reshape(r, num_classes)
        present = counts > 0  # classes absent from a resample are ignored, as in metric_value
        n_present = present.sum(axis=1)
        for j, correct in enumerate(corrects):
            hits = np.bincount(offset[correct[idx]], minlength=r * num_classes).reshape(r, num_classes)
            per_class = np.divide(hits, counts, out=np.zeros(hits.shape), where=present)
            out[j, start : start + r] = per_class.sum(axis=1) / n_present
        del idx, offset
    return out


def _quantiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(samples, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(low), float(high)


def _check_resamples(resamples: int) -> None:
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples}")


def bootstrap_interval(
    labels: Any,
    predictions: Any,
    metric: str,
    num_classes: int,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the metric over the test
    images: resample the N images with replacement R times, take the (1-c)/2 and (1+c)/2 quantiles."""
    labels, predictions = _label_arrays(labels, predictions)
    _check_metric(metric, labels, num_classes)
    _check_confidence(confidence)
    _check_resamples(resamples)
    samples = _resampled_metrics(labels, [labels == predictions], metric, num_classes, int(resamples), seed)[0]
    low, high = _quantiles(samples, confidence)
    return {
        "value": metric_value(labels, predictions, metric, num_classes),
        "low": low,
        "high": high,
        "resamples": int(resamples),
        "method": f"percentile bootstrap over the {len(labels)} test images, {resamples} resamples, "
        f"{_percent(confidence)}",
    }


def paired_bootstrap(
    labels: Any,
    predictions_a: Any,
    predictions_b: Any,
    metric: str,
    num_classes: int,
    confidence: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired percentile bootstrap of metric(a) - metric(b) over the test images: each resample of the
    images is scored for both methods, so the interval reflects only how they differ on the same
    images (Koehn 2004, paired bootstrap resampling; percentile interval as Efron & Tibshirani 1993)."""
    labels, predictions_a, predictions_b = _label_arrays(labels, predictions_a, predictions_b)
    _check_metric(metric, labels, num_classes)
    _check_confidence(confidence)
    _check_resamples(resamples)
    both = _resampled_metrics(
        labels, [labels == predictions_a, labels == predictions_b], metric, num_classes, int(resamples), seed
    )
    low, high = _quantiles(both[0] - both[1], confidence)
    return {
        "difference": metric_value(labels, predictions_a, metric, num_classes)
        - metric_value(labels, predictions_b, metric, num_classes),
        "low": low,
        "high": high,
        "resamples": int(resamples),
        "method": f"paired percentile bootstrap over the {len(labels)} test images (the same resamples for "
        f"both), {resamples} resamples, {_percent(confidence)}",
    }


def mcnemar_exact(labels: Any, predictions_a: Any, predictions_b: Any) -> dict[str, Any]:
    """McNemar 1947 on the discordant pairs, exact binomial version as statsmodels'
    mcnemar(exact=True): with b images right only for a and c right only for b, the two-sided
    p = min(1, 2 · Binom(b + c, 1/2).cdf(min(b, c))); 1.0 when b + c == 0."""
    labels, predictions_a, predictions_b = _label_arrays(labels, predictions_a, predictions_b)
    right_a = labels == predictions_a
    right_b = labels == predictions_b
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(right_b & ~right_a))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else min(1.0, 2.0 * float(sps.binom.cdf(min(a_only, b_only), discordant, 0.5)))
    return {
        "a_only": a_only,
        "b_only": b_only,
        "p_value": p,
        "method": "McNemar exact (two-sided binomial on the discordant pairs)",
    }


def _rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014): (R+ - R-) / (R+ + R-), with the ranks of
    |d| over the non-zero differences (zeros dropped, as scipy's wilcoxon zero_method='wilcox')."""
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0
    ranks = sps.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def paired_test(a: Any, b: Any, test: str = "t", confidence: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two methods over n splits/seeds (a[i] and b[i] from the same one).
    test="t": paired t test (Student 1908; scipy.stats.ttest_rel), effect size Cohen's d_z =
    mean(d) / sd(d) (Cohen 1988). test="wilcoxon": Wilcoxon signed-rank test (Wilcoxon 1945;
    scipy.stats.wilcoxon, two-sided, exact or normal approximation as scipy chooses), effect size the
    matched-pairs rank-biserial correlation (Kerby 2014). low/high: Student-t interval of the mean
    difference. Degenerate input gives None (never NaN) with the reason in `method`."""
    if test not in ("t", "wilcoxon"):
        raise ValueError(f"unknown test {test!r}: expected 't' or 'wilcoxon'")
    _check_confidence(confidence)
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"paired_test needs paired values: a has {x.size} values, b has {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired_test got non-finite values")
    d = x - y
    n = int(d.size)
    scale = max(1.0, float(np.max(np.abs(d)))) if n else 1.0
    d = np.where(np.abs(d) <= _TIE_TOLERANCE * scale, 0.0, d)  # last-bit noise of equal values is no difference
    effect_name = "Cohen's d_z" if test == "t" else "rank-biserial r"
    name = "paired t test" if test == "t" else "Wilcoxon signed-rank test"
    out: dict[str, Any] = {
        "n": n,
        "mean_difference": float(d.mean()) if n else None,
        "low": None,
        "high": None,
        "statistic": None,
        "p_value": None,
        "effect_size": None,
        "effect_size_name": effect_name,
        "test": test,
    }
    if n < 2:
        out["method"] = f"{name}: {n} pair(s), a test and an interval need n >= 2"
        return out
    interval = mean_interval(d, confidence)
    out["low"], out["high"] = interval["low"], interval["high"]
    ci = f"Student t {_percent(confidence)} interval of the mean difference"
    if not np.any(d):
        out.update(statistic=0.0, p_value=1.0, effect_size=0.0)
        out["method"] = f"{name} over {n} pairs: every difference is zero (p = 1); {ci}"
        return out
    if test == "t":
        if np.ptp(d) <= _TIE_TOLERANCE * scale:
            # Equal non-zero differences: sd = 0, t and d_z are infinite, so the t test says nothing useful.
            out["method"] = (
                f"{name} over {n} pairs: every difference equals {d[0]:.6g} (zero variance), so t and d_z "
                f"are undefined; {ci}"
            )
            return out
        result = sps.ttest_rel(x, y)
        out.update(
            statistic=float(result.statistic),
            p_value=float(result.pvalue),
            effect_size=float(d.mean() / d.std(ddof=1)),
        )
        out["method"] = f"{name} (scipy.stats.ttest_rel) over {n} pairs, two-sided; {ci}"
    else:
        result = sps.wilcoxon(d)  # zeros dropped (zero_method='wilcox'), two-sided
        out.update(statistic=float(result.statistic), p_value=float(result.pvalue), effect_size=_rank_biserial(d))
        out["method"] = f"{name} (scipy.stats.wilcoxon) over {n} pairs, two-sided; {ci}"
    if not math.isfinite(out["p_value"]) or not math.isfinite(out["statistic"]):
        out.update(statistic=None, p_value=None)
        out["method"] += "; scipy returned no finite result"
    return out


def compare_on_images(
    labels: Any,
    predictions_a: Any,
    predictions_b: Any,
    metric: str,
    num_classes: int,
    confidence: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Two methods on the same test images, both ways: metric(a) - metric(b) with its paired bootstrap
    interval, and McNemar's exact test on the images only one of them gets right."""
    boot = paired_bootstrap(labels, predictions_a, predictions_b, metric, num_classes, confidence, resamples, seed)
    mcnemar = mcnemar_exact(labels, predictions_a, predictions_b)
    return {
        "difference": boot["difference"],
        "low": boot["low"],
        "high": boot["high"],
        "p_value": mcnemar["p_value"],
        "a_only": mcnemar["a_only"],
        "b_only": mcnemar["b_only"],
        "method": f"{boot['method']}; {mcnemar['method']}",
    }
