"""Linear SVM: L2-regularised squared hinge, one-vs-rest, C=1 by default as in the original FNE code.

Two backends solve the same objective: `sklearn` (LinearSVC, the reference) and `torch` (all
classes at once, GPU when available; tlbench/classifiers/torch_svm.py). `C="auto"` picks C from a
log grid by stratified k-fold cross-validation on the training split, scored with the dataset's
metric, then refits on all training data; the whole grid is recorded. With the torch backend the
whole grid (every fold, C value and class, plus the refit) is solved in kernel space on one Gram
matrix (tlbench/classifiers/kernel_newton.py) when there are no more images than features; a single
torch fit then starts from the same kernel-space solution (L-BFGS checks it in the primal).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from tlbench.classifiers.chunks import as_tensor, default_device, row_chunks
from tlbench.classifiers.cross_validation import (
    DEFAULT_GRID,
    Folds,
    check_C,
    choose_C,
    stratified_folds,
    warm_started_predictions,
)
from tlbench.classifiers.kernel_newton import gram_matrix, solve_squared_hinge_kernel
from tlbench.classifiers.torch_svm import TorchSquaredHingeSVM

BACKENDS = ("sklearn", "torch")
KERNEL_MAX_ROWS = 20_000  # the Gram matrix of C=auto: at most 1.6 GB of float32
CONTINUATION_DECADES = 4  # a single kernel-space fit at C starts at C / 10^4 and warm-starts up


def kernel_applies(features: np.ndarray) -> bool:
    """Kernel space pays when there are no more rows than features: then the Gram matrix is smaller
    than X and (generically) of full rank; with more rows it is rank-deficient and CG on it stalls
    at large C (measured: no convergence at C=100 on 300 x 62)."""
    return features.shape[0] <= min(KERNEL_MAX_ROWS, features.shape[1] + 1)


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
        check_C(C, c_grid, cv_folds)
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
        self.selection: dict[str, Any] = {}
        self._refit_init: np.ndarray | None = None  # the kernel solver's refit, to start L-BFGS from
        self.kernel_info: dict[str, Any] = {}  # the kernel solver's last run

    def _fit_one(self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None) -> Any:
        if self.backend == "torch":
            return TorchSquaredHingeSVM(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)
        svc = LinearSVC(C=C, max_iter=self.max_iter, tol=self.tol, dual=self.dual, random_state=self.random_state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(features, labels)
        svc.tlbench_converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return svc

    def _kernel_solve(
        self, features: np.ndarray, labels: np.ndarray, folds: Folds, c_values: list[float]
    ) -> tuple[list[list[np.ndarray]], dict[float, torch.Tensor]]:
        """Every fold, plus all training rows (the refit), for every class in one batch of columns on
        one Gram matrix; one solve per C, ascending, each warm-started from the previous C. Returns the
        held-out predictions [fold][C] and the refit's coefficients (n, K) per C."""
        device = default_device(None)
        x = as_tensor(features, device)
        gram = gram_matrix(x, 1.0, device)
        classes, encoded = np.unique(labels, return_inverse=True)
        n, k, f = len(labels), len(classes), len(folds)
        rows = torch.zeros(n, f + 1, dtype=torch.bool, device=device)
        for i, (train, _) in enumerate(folds):
            rows[torch.from_numpy(train).to(device), i] = True
        rows[:, f] = True  # the refit on all training rows
        onehot = torch.from_numpy(encoded).to(device)[:, None] == torch.arange(k, device=device)
        signs = torch.where(onehot, 1.0, -1.0)[:, None, :].expand(n, f + 1, k).reshape(n, -1)
        rows = rows[:, :, None].expand(n, f + 1, k).reshape(n, -1)
        group = torch.arange(f + 1, device=device).repeat_interleave(k)  # one stopping rule per fold
        predictions: list[list[np.ndarray]] = [[] for _ in folds]
        beta, converged, newton, products, refit = None, True, 0, 0, {}
        for c in c_values:
            C = torch.full((signs.shape[1],), c, device=device)
            result = solve_squared_hinge_kernel(
                gram, signs, rows, C, group, tol=self.tol, max_iter=self.max_iter, init=beta
            )
            beta, converged = result.beta, converged and bool(result.converged.all())
            newton, products = newton + result.newton_steps, products + result.matvecs
            scores = result.scores.view(n, f + 1, k)
            for i, (_, held) in enumerate(folds):
                predictions[i].append(classes[scores[torch.from_numpy(held).to(device), i].argmax(1).cpu().numpy()])
            refit[c] = beta.view(n, f + 1, k)[:, f]
        self.kernel_info = {"converged": converged, "newton_steps": newton, "gram_products": products}
        return predictions, refit

    def _weights_from_beta(self, features: np.ndarray, beta: torch.Tensor) -> np.ndarray:
        """w = sum_i beta_i [x_i, 1] as (K, D+1), row chunk by row chunk."""
        x = as_tensor(features, beta.device)
        w = torch.zeros(beta.shape[1], x.shape[1] + 1, device=beta.device)
        for start, chunk in row_chunks(x, beta.device):
            w[:, :-1] += beta[start : start + chunk.shape[0]].T @ chunk
        w[:, -1] = beta.sum(0)
        return w.cpu().numpy()

    def _select_C(self, features: np.ndarray, labels: np.ndarray) -> float:
        folds = stratified_folds(labels, self.cv_folds, self.random_state)
        if self.backend == "torch" and kernel_applies(features):
            predictions, refit = self._kernel_solve(features, labels, folds, self.c_grid)
            self.selection = {"solver": "kernel Newton-CG, all folds and classes at once", **self.kernel_info}
        else:  # ascending C, the torch backend warm-starting each C from the previous one on the same fold
            predictions, refit = warm_started_predictions(self._fit_one, features, labels, folds, self.c_grid), {}
            self.selection = {"solver": "one fit per fold and C"}
        chosen, self.grid = choose_C(labels, folds, self.c_grid, predictions, self.metric)
        if chosen in refit:
            self._refit_init = self._weights_from_beta(features, refit[chosen])
        return chosen

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearSVM:
        if self.C == "auto":
            self.chosen_C = self._select_C(features, labels)
        elif self.backend == "torch" and kernel_applies(features):
            # no more images than features: Newton in kernel space, then L-BFGS checks (and if need be
            # finishes) in the primal, so the stopping rule and the reported objective are the primal's
            # along a path of C values, decades up to C, each warm-started from the last: from zero,
            # Newton at C=1 took 124 steps on the default job's FNE features, along the path 12 in all
            path = [float(self.C) * 10.0**k for k in range(-CONTINUATION_DECADES, 1)]
            refit = self._kernel_solve(features, labels, [], path)[1]
            self._refit_init = self._weights_from_beta(features, refit[float(self.C)])
        assert self.chosen_C is not None
        self.model = self._fit_one(features, labels, self.chosen_C, self._refit_init)
        self._refit_init = None
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
            record["solver"] = "kernel Newton-CG, then L-BFGS in the primal" if self.kernel_info else "L-BFGS"
            if self.kernel_info and self.C != "auto":
                record["kernel_newton"] = self.kernel_info
        if self.C == "auto":
            record["C_selection"] = {"folds": self.cv_folds, "metric": self.metric, "grid": self.grid, **self.selection}
        return record
