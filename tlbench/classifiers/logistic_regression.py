"""Multinomial logistic regression (L2, C as in scikit-learn's LogisticRegression) solved in torch,
all classes at once, GPU when available (tlbench/classifiers/torch_logistic.py). `C="auto"` is the
linear SVM's selection (tlbench/classifiers/cross_validation.py): one warm-started fit per fold and C,
ascending, on stratified k folds of the training split or on the folds given to `fit`
(c_selection=validation: one (train, val) fold), scored with the dataset's metric, the grid
recorded, then a refit on all the rows given. Fits that stop short of the tolerance are logged."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlbench.classifiers.convergence import warn_fit, warn_grid
from tlbench.classifiers.cross_validation import (
    DEFAULT_GRID,
    Folds,
    check_C,
    choose_C,
    selection_folds,
    warm_started_predictions,
)
from tlbench.classifiers.torch_logistic import TorchSoftmaxRegression

NAME = "logistic_regression"


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
        c_selection: str = "kfold",
    ) -> None:
        check_C(C, c_grid, cv_folds, c_selection)
        self.C = C
        self.c_selection = c_selection  # validation: the caller gives fit() the (train, val) fold
        self.max_iter, self.tol, self.random_state = int(max_iter), float(tol), random_state
        self.c_grid = sorted(float(c) for c in c_grid)
        self.cv_folds = int(cv_folds)
        self.metric = metric  # the dataset's metric, for C=auto
        self.model: TorchSoftmaxRegression | None = None
        self.chosen_C: float | None = None if C == "auto" else float(C)
        self.grid: list[dict[str, Any]] = []
        self.selection: dict[str, Any] = {}

    def _fit_one(
        self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None
    ) -> TorchSoftmaxRegression:
        return TorchSoftmaxRegression(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)

    def fit(self, features: np.ndarray, labels: np.ndarray, folds: Folds | None = None) -> LogisticRegression:
        """`folds` ((train rows, held-out rows) per fold, indices into `features`) score the C=auto grid
        instead of the stratified k-fold, and the final model is fitted on all rows given: for the
        validation protocol, pass train + val rows and folds=[(train_rows, val_rows)]."""
        selection = selection_folds(labels, folds, self.C, self.c_selection, self.cv_folds, self.random_state)
        if selection is not None:
            folds, made = selection
            predictions, unconverged = warm_started_predictions(self._fit_one, features, labels, folds, self.c_grid)
            self.chosen_C, self.grid = choose_C(labels, folds, self.c_grid, predictions, self.metric)
            self.selection = {"folds": made, "solver": "one fit per fold and C", "unconverged_fits": unconverged}
            warn_grid(NAME, unconverged, len(folds) * len(self.c_grid))
        assert self.chosen_C is not None
        self.model = self._fit_one(features, labels, self.chosen_C)
        warn_fit(NAME, self.chosen_C, self.model.convergence)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        assert self.model is not None, "fit first"
        return self.model.predict(features)

    def describe(self) -> dict:
        record: dict[str, Any] = {
            "type": NAME,
            "backend": "torch (L-BFGS, multinomial, all classes at once)",
            "C": self.chosen_C,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "converged": None,
        }
        if self.model is not None:
            keys = ("converged", "objective", "grad_max", "target", "iterations", "float64_iterations")
            record.update({k: self.model.info[k] for k in (*keys, "evaluations", "device")})
        if self.C == "auto":
            record["C_selection"] = {"c_selection": self.c_selection, "metric": self.metric, "grid": self.grid}
            record["C_selection"].update(self.selection)  # folds, solver, unconverged_fits
        return record
