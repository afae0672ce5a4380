"""Multinomial logistic regression (L2, C as in scikit-learn's LogisticRegression) solved in torch,
all classes at once, GPU when available (tlbench/classifiers/torch_logistic.py). `C="auto"` is the
linear SVM's selection (`AutoC`, tlbench/classifiers/cross_validation.py): one warm-started fit per
fold and C, ascending, on stratified k folds of the training split or on the folds given to `fit`
(c_selection=validation: one (train, val) fold), scored with the dataset's metric, the grid
recorded, then a refit on all the rows given. Fits that stop short of the tolerance are logged."""

from __future__ import annotations

from typing import Any

import numpy as np

from tlbench.classifiers.convergence import warn_fit
from tlbench.classifiers.cross_validation import DEFAULT_GRID, AutoC, Folds
from tlbench.classifiers.torch_logistic import TorchSoftmaxRegression

NAME = "logistic_regression"


class LogisticRegression(AutoC):
    label = NAME

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
        self._init_C(C, c_grid, cv_folds, metric, c_selection, random_state)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.model: TorchSoftmaxRegression | None = None

    def _fit_one(
        self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None
    ) -> TorchSoftmaxRegression:
        return TorchSoftmaxRegression(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)

    def fit(self, features: np.ndarray, labels: np.ndarray, folds: Folds | None = None) -> LogisticRegression:
        """`folds` ((train rows, held-out rows) per fold, indices into `features`) score the C=auto grid
        instead of the stratified k-fold, and the final model is fitted on all rows given: for the
        validation protocol, pass train + val rows and folds=[(train_rows, val_rows)]."""
        self._select_C(features, labels, folds)
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
        return self._describe_C(record)
