"""The linear classifier fitted on the train rows of post-processed features: the last step of an
extraction strategy, and of every probe an analysis fits on the same features (tlbench/analysis/)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlbench.embedding.store import FeatureSet


def selects_on_val(classifier: Any) -> bool:
    return getattr(classifier, "c_selection", "kfold") == "validation"


def fit_classifier(classifier: Any, inputs: dict[str, np.ndarray], features: dict[str, FeatureSet]) -> list[str]:
    """Fit on the train rows and return the splits to evaluate (val, when there is one, and test).
    With c_selection=validation (the linear evaluation of Kornblith et al. 2019 as SimCLR App. B.8.1
    states it: "After selecting the optimal hyperparameters on the validation set, we retrained the
    model ... using all training and validation images"), C is scored on the val split and the final
    fit uses train + val, so val is no longer held out and only test is evaluated."""
    train = features["train"]
    if not selects_on_val(classifier):
        classifier.fit(inputs["train"], train.labels)
        return [s for s in ("val", "test") if s in features]
    n, m = len(train.labels), len(features["val"].labels)
    rows = np.concatenate([inputs["train"], inputs["val"]])
    labels = np.concatenate([train.labels, features["val"].labels])
    classifier.fit(rows, labels, folds=[(np.arange(n), np.arange(n, n + m))])
    return ["test"]
