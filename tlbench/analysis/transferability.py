"""Transferability scores of each layer, beside the probe accuracy they are meant to predict.

A score is computed from the training rows alone, before any classifier is fitted; it is useful only
if it ranks layers (or models) as the probe's test accuracy does. Agostinelli et al. (ECCV 2022,
"How stable are transferability metrics evaluations?") found such rankings flip across setups, so
every correlation here stands beside a naive baseline's: the layer's depth across layers (the
backbone's ImageNet accuracy across models, in tlbench-report --scores).

Scores (tlbench/analysis/scores.py, tlbench/classifiers/knn.py), each on the inputs the layer's
probe is fitted on (the run's post-processing, statistics from the train rows):
  logme             LogME (You et al., ICML 2021), mean log evidence per image, with the log-determinant
                    over all D eigenvalues (LogME.py counts only N of them when D > N: thuml/LogME #23)
  h_score           H-score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022)
  knn               leave-one-out kNN accuracy on the train rows (cosine, k, exp(s/T) votes as DINO)
  nearest_centroid  leave-one-out nearest-class-mean accuracy on the train rows
All are exact for D >> N: they work in the N-dimensional space, never with a D x D matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCORES = ("logme", "h_score", "knn", "nearest_centroid")
_SHARED = ("logme", "h_score", "nearest_centroid")  # one decomposition of the inputs serves these


def check_scores(names: Sequence[str]) -> list[str]:
    """The score names, refused with the list when one is unknown (a ValueError the caller words)."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {', '.join(map(str, unknown))}; available: {', '.join(SCORES)}")
    return list(dict.fromkeys(names))


def layer_scores(
    inputs: np.ndarray, labels: np.ndarray, names: Sequence[str], knn_k: int = 20, knn_temperature: float = 0.07
) -> dict[str, float | None]:
    """The named scores of one layer's (or the whole embedding's) training inputs; None where undefined."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread: OpenBLAS's idle threads spin after each LAPACK call and slowed the torch kNN beside
    # them (and its threaded eigensolvers on 2 busy cores): all scores of the default job took 11.2 s
    # before, 6.6 s with it (benchmarks/README.md).
    with threadpool_limits(limits=1, user_api="blas"):
        return _layer_scores(inputs, labels, names, knn_k, knn_temperature)


def _layer_scores(
    inputs: np.ndarray, labels: np.ndarray, names: Sequence[str], knn_k: int, knn_temperature: float
) -> dict[str, float | None]:
    from tlbench.analysis.scores import FeatureStats
    from tlbench.classifiers.knn import leave_one_out_knn_accuracy

    values: dict[str, float] = {}
    if any(n in _SHARED for n in names):
        stats = FeatureStats(inputs, labels)  # one pass over the inputs, one decomposition
        if "logme" in names:
            # corrected: LogME.py's log-determinant counts N of the D eigenvalues when D > N, so a layer
            # wider than the images gained a bonus that grows with its width (thuml/LogME issue #23,
            # fix in PR #24); equal to LogME.py's number when D < N (tests/test_transferability_scores.py)
            values["logme"] = stats.logme(corrected=True)
        if "h_score" in names:
            values["h_score"] = stats.h_score(shrinkage=True)
        if "nearest_centroid" in names:
            values["nearest_centroid"] = stats.nearest_centroid_accuracy()
    if "knn" in names:
        values["knn"] = float(leave_one_out_knn_accuracy(inputs, labels, k=knn_k, temperature=knn_temperature))
    # None where a score is undefined (LogME of a layer whose inputs are all zero): JSON has no NaN
    return {n: values[n] if np.isfinite(values[n]) else None for n in names}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b (ties counted as scipy does) and its two-sided p-value; NaN when one side is constant."""
    from scipy.stats import kendalltau

    if len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan"), float("nan")
    result = kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def tau_interval(
    x: np.ndarray, y: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of tau over resampled (x, y) pairs; resamples where a side is
    constant are dropped. The pairs (layers, models) are not exchangeable draws, so read it as the
    spread of tau under small changes of the set, not as a sampling interval."""
    rng = np.random.default_rng(seed)
    taus = []
    for _ in range(resamples):
        pick = rng.integers(0, len(x), len(x))
        tau, _ = kendall_tau(x[pick].tolist(), y[pick].tolist())
        if np.isfinite(tau):
            taus.append(tau)
    if len(taus) < resamples // 2:
        return None, None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(taus, [alpha, 1 - alpha])
    return float(low), float(high)


def correlations(
    predictors: dict[str, Sequence[float]],
    accuracy: Sequence[float],
    baseline: str,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Kendall's tau of each predictor with the accuracy, with p-value and bootstrap interval; the
    entry named `baseline` is marked as the naive one every score must beat. Pairs where the predictor
    is None (undefined) are left out; `n` counts the pairs used."""
    out = []
    for name, values in predictors.items():
        keep = [i for i, v in enumerate(values) if v is not None and np.isfinite(v)]
        x = np.asarray([values[i] for i in keep], dtype=float)
        y = np.asarray([accuracy[i] for i in keep], dtype=float)
        tau, p = kendall_tau(x.tolist(), y.tolist())
        low, high = tau_interval(x, y, resamples, confidence, seed) if np.isfinite(tau) else (None, None)
        out.append({
            "predictor": name,
            "baseline": name == baseline,
            "n": len(y),
            "kendall_tau": None if not np.isfinite(tau) else tau,
            "p_value": None if not np.isfinite(p) else p,
            "low": low,
            "high": high,
        })  # fmt: skip
    return out


def score_summary(
    layers: Sequence[dict[str, Any]],
    metric: str,
    names: Sequence[str],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """What the layer curve records of its layer rows' `scores`: each score's Kendall tau with the test
    accuracy beside the depth baseline's, over all layers (`score_correlations`) and over the upper half
    (`score_correlations_upper`), and each predictor's first-ranked layer (`score_picks`)."""
    accuracy = [r["test"][metric] for r in layers]
    taps = [r["tap"] for r in layers]
    predictors: dict[str, list[float | None]] = {"depth": list(module_depth(taps))}
    predictors.update({name: [r["scores"][name] for r in layers] for name in names})
    upper = upper_half(accuracy)
    return {
        "score_correlations": correlations(predictors, accuracy, "depth", resamples, confidence, seed),
        "score_correlations_upper": correlations(
            {k: [v[i] for i in upper] for k, v in predictors.items()},
            [accuracy[i] for i in upper],
            "depth",
            resamples,
            confidence,
            seed,
        ),
        "score_picks": picks(predictors, accuracy, taps),
    }


def module_depth(taps: Sequence[str]) -> list[float]:
    """The depth baseline: each tap's module in network order, 1, 2, ...; the reads of one module share
    it (a transformer block's `blocks.3:cls` and `blocks.3:patches`: one block, one depth)."""
    order: dict[str, int] = {}
    for tap in taps:
        order.setdefault(tap.split(":")[0], len(order) + 1)
    return [float(order[tap.split(":")[0]]) for tap in taps]


def upper_half(accuracy: Sequence[float]) -> np.ndarray:
    """Positions of the layers at or above the median accuracy: the half where picking a layer matters
    (the other half is told apart by depth alone)."""
    values = np.asarray(accuracy, dtype=float)
    return np.flatnonzero(values >= np.median(values))


def picks(predictors: dict[str, Sequence[float | None]], accuracy: Sequence[float], taps: Sequence[str]) -> list[dict]:
    """The layer each predictor ranks first (ties: the first in network order, for depth the last tap;
    an undefined score never) and what it costs against the best layer by test accuracy: the use a
    score is for, choosing a layer without fitting every one."""
    values = np.asarray(accuracy, dtype=float)
    best = float(values.max())
    out = []
    for name, x in predictors.items():
        ranked = np.asarray([-np.inf if v is None or not np.isfinite(v) else v for v in x], dtype=float)
        if not np.isfinite(ranked).any():
            continue
        # ties: the first in network order, but for depth the last tap, the one the head reads
        i = len(ranked) - 1 - int(np.argmax(ranked[::-1])) if name == "depth" else int(np.argmax(ranked))
        out.append({"predictor": name, "tap": taps[i], "accuracy": float(values[i]), "regret": best - float(values[i])})
    return out


def protocol(names: Sequence[str], knn_k: int, knn_temperature: float, resamples: int, confidence: float) -> dict:
    return {
        "scores": list(names),
        "inputs": "each layer's training inputs as its probe sees them (the run's post-processing, "
        "statistics from the train rows); the full row: the whole embedding's",
        "knn": {"k": knn_k, "temperature": knn_temperature, "similarity": "cosine", "rows": "leave-one-out"},
        "correlation": "Kendall's tau-b of each score with the probe's test accuracy across the layers "
        "(the full embedding not included), two-sided p-value from scipy.stats.kendalltau",
        "baseline": "depth: the position of the tap's module in the network (deeper = higher; the reads of "
        "one module, a transformer block's class token and patch mean, share it)",
        "upper_half": "score_correlations_upper: the same tau over the layers at or above the median accuracy",
        "picks": "score_picks: the layer each predictor ranks first, its test accuracy, and the best layer's "
        "accuracy minus it (regret)",
        "interval": f"percentile bootstrap over the layers (pairs resampled), {resamples} resamples, "
        f"{round(100 * confidence)}%: the spread of tau under changes of the layer set",
    }
