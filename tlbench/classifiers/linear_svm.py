"""Linear SVM (scikit-learn LinearSVC: L2-regularised squared hinge, one-vs-rest), C=1 by default
as in the original FNE code."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC


class LinearSVM:
    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        dual: bool | str = "auto",
        random_state: int = 0,
    ) -> None:
        if C <= 0:
            raise ValueError(f"classifier.C must be positive, got {C}")
        self.params = {"C": float(C), "max_iter": int(max_iter), "tol": float(tol), "dual": dual}
        self.svc = LinearSVC(C=C, max_iter=max_iter, tol=tol, dual=dual, random_state=random_state)
        self.converged: bool | None = None

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearSVM:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.svc.fit(features, labels)
        self.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.svc.predict(features)

    def describe(self) -> dict:
        return {
            "type": "linear_svm",
            "backend": "sklearn.LinearSVC",
            **self.params,
            "converged": self.converged,
            "iterations": int(np.max(self.svc.n_iter_)) if hasattr(self.svc, "n_iter_") else None,
        }
