"""The layer curve: from one FNE extraction, the classifier fitted on each tap's columns alone, on the
whole embedding, and optionally on layers 1..i together; accuracy against depth.

It answers the seed's claim "if source and target are close, the last two layers are your best
chance; if they are far, try everything, use the FNE" (Garcia-Gasulla et al. 2018) on the run's own
data: which layers carry the transfer, and how far the last layer is from the whole network. Each
layer is post-processed as the run's strategy does it, with statistics from the train rows of that
layer (for the FNE, standardization and discretization work column by column, so those are the
whole embedding's post-processed columns). Costs one fit per layer, no forward pass."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tlbench.analysis.probe import ProbeResult, columns_of, columnwise, fit_probe
from tlbench.analysis.transferability import layer_scores, score_summary
from tlbench.analysis.transferability import protocol as score_protocol
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.store import FeatureSet
from tlbench.embedding.views import tap_columns
from tlbench.stats import bootstrap_interval, compare_on_images

log = logging.getLogger(__name__)


def layer_curve(
    features: dict[str, FeatureSet],
    inputs: dict[str, np.ndarray],
    whole: ProbeResult,
    postprocess: dict[str, Any],
    make_classifier: Callable[[], Any],
    metric: str,
    num_classes: int,
    cumulative: bool = False,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    scores: Sequence[str] = (),
    knn_k: int = 20,
    knn_temperature: float = 0.07,
) -> dict[str, Any]:
    """The record of the layer curve (results.json `analyses.layer_curve`). `inputs`: the whole
    embedding post-processed, per split; `whole`: the run's own fit on them (the FNE row). `scores`:
    transferability scores (tlbench/analysis/transferability.py) of each layer's training inputs,
    written beside its accuracy, with their rank correlation with it across the layers."""
    layout = features["train"].layout
    if len(layout) < 2:
        raise ValueError(f"a layer curve needs several taps; these features have {len(layout)}")
    taps = tap_columns(layout)
    reuse = columnwise(postprocess)
    test = features["test"]
    train_labels = features["train"].labels
    scores = list(scores)
    t0 = time.perf_counter()

    score_s = 0.0

    def probe(columns: slice, part: list[tuple[str, int]]) -> tuple[ProbeResult, dict[str, float]]:
        nonlocal score_s
        sliced = {split: columns_of(fs, columns, part) for split, fs in features.items()}
        t = time.perf_counter()
        if reuse:  # the same columns of the whole embedding's inputs: nothing to post-process again
            probe_inputs = {s: np.ascontiguousarray(x[:, columns]) for s, x in inputs.items()}
        else:
            post = FeaturePostprocess(**postprocess).fit(sliced["train"].features, part)
            probe_inputs = {split: post.transform(fs.features) for split, fs in sliced.items()}
        post_s = time.perf_counter() - t
        result = fit_probe(sliced, make_classifier, num_classes, inputs=probe_inputs)
        result = ProbeResult(result.predictions, result.metrics, result.fit_s + post_s)
        t = time.perf_counter()
        values = layer_scores(probe_inputs["train"], train_labels, scores, knn_k, knn_temperature) if scores else {}
        score_s += time.perf_counter() - t
        return result, values

    def row(
        kind: str, depth: int | None, tap: str, dim: int, result: ProbeResult, values: dict[str, float]
    ) -> dict[str, Any]:
        interval = bootstrap_interval(
            test.labels, result.predictions["test"], metric, num_classes, confidence, resamples, seed
        )
        out = {"kind": kind, "depth": depth, "tap": tap, "dim": dim}
        out.update({split: m for split, m in result.metrics.items()})
        out.update(low=interval["low"], high=interval["high"], fit_s=round(result.fit_s, 3))
        if values:
            out["scores"] = values
        return out

    rows: list[dict[str, Any]] = []
    per_layer: list[ProbeResult] = []
    for depth, (tap, columns) in enumerate(taps, start=1):
        result, values = probe(columns, [layout[depth - 1]])
        per_layer.append(result)
        rows.append(row("layer", depth, tap, columns.stop - columns.start, result, values))
        log.info(
            "layer curve %d/%d %s (%d dims): test %s %.4f (%.1f s)",
            depth,
            len(taps),
            tap,
            columns.stop - columns.start,
            metric,
            result.metrics["test"][metric],
            result.fit_s,
        )
    if cumulative:  # layers 1..i together; 1..L is the whole embedding, already fitted
        for depth in range(2, len(taps)):
            stop = taps[depth - 1][1].stop
            result, values = probe(slice(0, stop), layout[:depth])
            rows.append(row("prefix", depth, taps[depth - 1][0], stop, result, values))
            log.info("layer curve, layers 1..%d: test %s %.4f", depth, metric, result.metrics["test"][metric])
    t = time.perf_counter()
    whole_values = layer_scores(inputs["train"], train_labels, scores, knn_k, knn_temperature) if scores else {}
    score_s += time.perf_counter() - t
    rows.append(row("full", None, f"all {len(taps)} layers", features["train"].dim, whole, whole_values))
    layers = [r for r in rows if r["kind"] == "layer"]
    summary = score_summary(layers, metric, scores, resamples, confidence, seed) if scores else {}

    best = max(range(len(taps)), key=lambda i: per_layer[i].metrics["test"][metric])
    last = len(taps) - 1
    against = {"last layer": per_layer[last], f"best layer ({taps[best][0]})": per_layer[best]}
    comparisons = [
        _compare("fne", name, whole, other, test.labels, metric, num_classes, resamples, seed)
        for name, other in against.items()
    ]
    return {
        "metric": metric,
        "rows": rows,
        "last_tap": taps[last][0],
        "best_tap": taps[best][0],
        "comparisons": comparisons,
        **summary,
        "protocol": {
            "features": f"one extraction of {len(taps)} taps ({features['train'].dim} columns); "
            "a layer is its tap's columns",
            "postprocess": {
                **postprocess,
                "statistics": "per layer, from the train rows"
                + (" (column-wise: the whole embedding's post-processed columns)" if reuse else ""),
            },
            "classifier": "the run's classifier, refitted for every layer",
            "train_images": len(features["train"].labels),
            "test_images": len(test.labels),
            "metric": metric,
            "cumulative": cumulative,
            "interval": f"percentile bootstrap over the {len(test.labels)} test images, {resamples} resamples, "
            f"{round(100 * confidence)}%",
            "comparison": "McNemar's exact test and a paired bootstrap interval of the difference, same test images",
            **({"scores": score_protocol(scores, knn_k, knn_temperature, resamples, confidence)} if scores else {}),
        },
        "timings": {
            "fits": round(time.perf_counter() - t0 - score_s, 3),
            **({"scores": round(score_s, 3)} if scores else {}),
        },
    }


def _compare(
    name_a: str,
    name_b: str,
    a: ProbeResult,
    b: ProbeResult,
    labels: np.ndarray,
    metric: str,
    num_classes: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Two probes on the same test images: the difference a - b with its paired bootstrap interval,
    and McNemar's exact test on the images one gets right and the other wrong."""
    both = compare_on_images(
        labels, a.predictions["test"], b.predictions["test"], metric, num_classes, resamples=resamples, seed=seed
    )
    return {
        "a": name_a,
        "b": name_b,
        "metric": metric,
        "a_value": a.metrics["test"][metric],
        "b_value": b.metrics["test"][metric],
        **both,
    }
