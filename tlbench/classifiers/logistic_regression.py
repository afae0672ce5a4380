"""Multinomial logistic regression (L2, C as in scikit-learn's LogisticRegression) solved in torch,
all classes at once, GPU when available (tlbench/classifiers/torch_logistic.py). `C="auto"` is the
linear SVM's cross-validation (tlbench/classifiers/cross_validation.py): one warm-started fit per fold
and C, ascending, scored with the dataset's metric, the grid recorded, then a refit on all data."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlbench.classifiers.cross_validation import (
    DEFAULT_GRID,
    check_C,
    choose_C,
    stratified_folds,
    warm_started_predictions,
)
from tlbench.classifiers.torch_logistic import TorchSoftmaxRegression


class LogisticRegression:
    def __init__(
        self,
        C: float | str = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: int = 0,
        c_grid: list[float] | tuple[float, ...] = DEFAULT_GRID,
        cv_folds: int = 5,
        metric: str = "top1",
    ) -> None:
        check_C(C, c_grid, cv_folds)
        self.C = C
        self.max_iter, self.tol, self.random_state = int(max_iter), float(tol), random_state
        self.c_grid = sorted(float(c) for c in c_grid)
        self.cv_folds = int(cv_folds)
        self.metric = metric  # the dataset's metric, for C=auto
        self.model: TorchSoftmaxRegression | None = None
        self.chosen_C: float | None = None if C == "auto" else float(C)
        self.grid: list[dict[str, Any]] = []

    def _fit_one(
        self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None
    ) -> TorchSoftmaxRegression:
        return TorchSoftmaxRegression(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
        if self.C == "auto":
            folds = stratified_folds(labels, self.cv_folds, self.random_state)
            predictions = warm_started_predictions(self._fit_one, features, labels, folds, self.c_grid)
            self.chosen_C, self.grid = choose_C(labels, folds, self.c_grid, predictions, self.metric)
        assert self.chosen_C is not None
        self.model = self._fit_one(features, labels, self.chosen_C)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        assert self.model is not None, "fit first"
        return self.model.predict(features)

    def describe(self) -> dict:
        record: dict[str, Any] = {
            "type": "logistic_regression",
            "backend": "torch (L-BFGS, multinomial, all classes at once)",
            "C": self.chosen_C,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "converged": None,
        }
        if self.model is not None:
            record.update(
                {k: self.model.info[k] for k in ("converged", "objective", "grad_max", "evaluations", "device")}
            )
        if self.C == "auto":
            record["C_selection"] = {
                "folds": self.cv_folds,
                "metric": self.metric,
                "grid": self.grid,
                "solver": "one fit per fold and C",
            }
        return record
