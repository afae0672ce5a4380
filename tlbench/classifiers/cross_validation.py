"""C=auto for every classifier: stratified k-fold cross-validation of a log grid of C on the training
split, scored with the dataset's metric; the classifier supplies the held-out predictions (one fit
per fold and C, or all of them at once), this module makes the folds and picks the C."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from tlbench.metrics import classification_metrics

DEFAULT_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
Folds = list[tuple[np.ndarray, np.ndarray]]  # (train rows, held-out rows) per fold


def check_C(C: float | str, c_grid: Sequence[float], cv_folds: int) -> None:
    if C != "auto" and (isinstance(C, str) or C <= 0):
        raise ValueError(f"classifier.C must be positive or 'auto', got {C!r}")
    if C == "auto" and (cv_folds < 2 or not c_grid or min(c_grid) <= 0):
        raise ValueError(f"C=auto needs cv_folds >= 2 and a positive c_grid, got {cv_folds} and {c_grid}")


def stratified_folds(labels: np.ndarray, cv_folds: int, random_state: int) -> Folds:
    """At most cv_folds folds, fewer when the smallest class has fewer images."""
    smallest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())
    folds = min(cv_folds, smallest)
    if folds < 2:
        raise ValueError(f"C=auto needs at least 2 training images per class, the smallest class has {smallest}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(len(labels)), labels))


def choose_C(
    labels: np.ndarray, folds: Folds, c_grid: Sequence[float], predictions: list[list[np.ndarray]], metric: str
) -> tuple[float, list[dict[str, Any]]]:
    """predictions[f][g]: the labels predicted for fold f's held-out rows when trained with c_grid[g].
    Returns the C of the best mean score (the smallest C of equal means) and the whole grid."""
    num_classes = int(labels.max()) + 1
    grid = []
    for g, c in enumerate(c_grid):
        scores = [
            classification_metrics(labels[held], predictions[f][g], num_classes)[metric]
            for f, (_, held) in enumerate(folds)
        ]
        grid.append({"C": float(c), "scores": scores, "mean": float(np.mean(scores))})
    best = max(grid, key=lambda row: row["mean"])  # max keeps the first of equal means: c_grid is ascending
    return float(best["C"]), grid


def warm_started_predictions(
    fit: Callable[[np.ndarray, np.ndarray, float, Any], Any],
    features: np.ndarray,
    labels: np.ndarray,
    folds: Folds,
    c_grid: Sequence[float],
) -> list[list[np.ndarray]]:
    """One fit per fold and C, ascending C, each started from the previous C's weights on the same
    fold (`fit(features, labels, C, init)` returns a model with `predict` and, if it can warm-start,
    `weights_`)."""
    predictions = []
    for train, held in folds:
        init, row = None, []
        for c in c_grid:
            model = fit(features[train], labels[train], c, init)
            init = getattr(model, "weights_", None)
            row.append(model.predict(features[held]))
        predictions.append(row)
    return predictions
