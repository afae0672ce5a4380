"""One linear probe on features already extracted: some columns (one tap, several, all), some train
rows (a few-shot draw), the post-processing fitted on those train rows, the run's classifier fitted on
them and evaluated on the evaluated splits. Costs a fit, never a forward pass."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlbench.embedding.classifier_fit import fit_classifier
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.store import FeatureSet
from tlbench.metrics import classification_metrics


@dataclass
class ProbeResult:
    predictions: dict[str, np.ndarray]  # evaluated split -> predicted classes, rows as the FeatureSet's
    metrics: dict[str, dict[str, float]]  # evaluated split -> {"top1", "mean_per_class"}
    fit_s: float  # post-processing and fit, seconds


def columns_of(features: FeatureSet, columns: slice, layout: list[tuple[str, int]]) -> FeatureSet:
    """The columns of one or several taps (a contiguous range of the embedding), copied contiguous."""
    return FeatureSet(
        np.ascontiguousarray(features.features[:, columns]),
        features.labels,
        features.indices,
        features.skipped,
        layout,
        entry_id=None,
    )


def rows_of(features: FeatureSet, rows: np.ndarray) -> FeatureSet:
    """Rows of a split by position (a few-shot draw from the readable training images)."""
    return FeatureSet(features.features[rows], features.labels[rows], features.indices[rows], [], features.layout)


def fit_probe(
    features: dict[str, FeatureSet],
    make_classifier: Callable[[], Any],
    num_classes: int,
    postprocess: dict[str, Any] | None = None,
    inputs: dict[str, np.ndarray] | None = None,
) -> ProbeResult:
    """Fit on `features["train"]` and evaluate. `postprocess`: FeaturePostprocess settings, fitted on
    these train rows; or `inputs`: the splits already post-processed (a column range of the whole
    embedding's inputs, where the post-processing works column by column: the same numbers)."""
    t0 = time.perf_counter()
    if inputs is None:
        post = FeaturePostprocess(**(postprocess or {})).fit(features["train"].features, features["train"].layout)
        inputs = {split: post.transform(fs.features) for split, fs in features.items()}
    classifier = make_classifier()
    evaluated = fit_classifier(classifier, inputs, features)
    fit_s = time.perf_counter() - t0
    predictions = {split: np.asarray(classifier.predict(inputs[split])) for split in evaluated}
    metrics = {
        split: classification_metrics(features[split].labels, predictions[split], num_classes) for split in evaluated
    }
    return ProbeResult(predictions, metrics, fit_s)


def columnwise(postprocess: dict[str, Any]) -> bool:
    """The post-processing treats each column alone, or each tap's columns as a block (standardize,
    discretize, l2_normalize=layer): a tap's post-processed columns, fitted on that tap alone, equal
    those columns of the whole embedding's post-processed inputs. l2_normalize=image mixes taps."""
    return postprocess.get("l2_normalize") in (None, "layer")
