"""Linear SVM: L2-regularised squared hinge, one-vs-rest, C=1 by default as in the original FNE code.

Two backends solve the same objective: `sklearn` (LinearSVC, the reference) and `torch` (all
classes at once, GPU when available; tlbench/classifiers/torch_svm.py). `C="auto"` picks C from a
log grid by stratified k-fold cross-validation on the training split, scored with the dataset's
metric, then refits on all training data; the whole grid is recorded.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

from tlbench.classifiers.torch_svm import TorchSquaredHingeSVM
from tlbench.metrics import classification_metrics

BACKENDS = ("sklearn", "torch")
DEFAULT_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


class LinearSVM:
    def __init__(
        self,
        C: float | str = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        dual: bool | str = "auto",
        random_state: int = 0,
        backend: str = "sklearn",
        c_grid: list[float] | tuple[float, ...] = DEFAULT_GRID,
        cv_folds: int = 5,
        metric: str = "top1",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"classifier.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if C != "auto" and (isinstance(C, str) or C <= 0):
            raise ValueError(f"classifier.C must be positive or 'auto', got {C!r}")
        if C == "auto" and (cv_folds < 2 or not c_grid or min(c_grid) <= 0):
            raise ValueError(f"C=auto needs cv_folds >= 2 and a positive c_grid, got {cv_folds} and {c_grid}")
        self.C = C
        self.backend = backend
        self.max_iter, self.tol, self.dual, self.random_state = int(max_iter), float(tol), dual, random_state
        self.c_grid = sorted(float(c) for c in c_grid)
        self.cv_folds = int(cv_folds)
        self.metric = metric  # the dataset's metric, for C=auto
        self.model: Any = None
        self.chosen_C: float | None = None if C == "auto" else float(C)
        self.grid: list[dict[str, Any]] = []
        self.converged: bool | None = None

    def _fit_one(self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None) -> Any:
        if self.backend == "torch":
            return TorchSquaredHingeSVM(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)
        svc = LinearSVC(C=C, max_iter=self.max_iter, tol=self.tol, dual=self.dual, random_state=self.random_state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(features, labels)
        svc.tlbench_converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return svc

    def _select_C(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Stratified k-fold over the grid, ascending C; the torch backend warm-starts each C from
        the previous one's weights on the same fold."""
        smallest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())
        folds = min(self.cv_folds, smallest)
        if folds < 2:
            raise ValueError(f"C=auto needs at least 2 training images per class, the smallest class has {smallest}")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        num_classes = int(labels.max()) + 1
        scores = {c: [] for c in self.c_grid}
        for train, held in splitter.split(features, labels):
            init = None
            for c in self.c_grid:
                model = self._fit_one(features[train], labels[train], c, init)
                init = getattr(model, "weights_", None)
                metrics = classification_metrics(labels[held], model.predict(features[held]), num_classes)
                scores[c].append(metrics[self.metric])
        self.grid = [{"C": c, "scores": s, "mean": float(np.mean(s))} for c, s in scores.items()]
        best = max(self.grid, key=lambda row: row["mean"])  # the first (smallest C) of equal means
        return float(best["C"])

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearSVM:
        if self.C == "auto":
            self.chosen_C = self._select_C(features, labels)
        assert self.chosen_C is not None
        self.model = self._fit_one(features, labels, self.chosen_C)
        info = getattr(self.model, "info", None)
        self.converged = info["converged"] if info else self.model.tlbench_converged
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)

    def describe(self) -> dict:
        record: dict[str, Any] = {
            "type": "linear_svm",
            "backend": "sklearn.LinearSVC" if self.backend == "sklearn" else "torch (L-BFGS, all classes at once)",
            "C": self.chosen_C,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "dual": self.dual,
            "converged": self.converged,
        }
        if self.backend == "sklearn" and self.model is not None and hasattr(self.model, "n_iter_"):
            record["iterations"] = int(np.max(self.model.n_iter_))
        if self.backend == "torch" and self.model is not None:
            record.update({k: self.model.info[k] for k in ("objective", "grad_norm", "evaluations", "device")})
        if self.C == "auto":
            record["C_selection"] = {"folds": self.cv_folds, "metric": self.metric, "grid": self.grid}
        return record
