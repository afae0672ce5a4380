"""Linear SVM: L2-regularised squared hinge, one-vs-rest, C=1 by default as in the original FNE code.

Two backends solve the same objective: `sklearn` (LinearSVC, the reference) and `torch` (all
classes at once, GPU when available; tlbench/classifiers/torch_svm.py). `C="auto"` picks C from a
log grid by stratified k-fold cross-validation on the training split, or on the folds given to `fit`
(c_selection=validation: one (train, val) fold), scored with the dataset's metric, then refits on all
the rows given; the whole grid is recorded. With the torch backend the whole grid (every fold, C value
and class, plus the refit) is solved in kernel space on one Gram matrix
(tlbench/classifiers/kernel_newton.py) when there are no more images than features; a single torch
fit then starts from the same kernel-space solution (L-BFGS checks it in the primal). Fits that stop
short of the tolerance are logged (tlbench/classifiers/convergence.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from tlbench.classifiers.chunks import as_tensor, default_device, tensor_chunks
from tlbench.classifiers.convergence import convergence_record, warn_fit
from tlbench.classifiers.cross_validation import DEFAULT_GRID, AutoC, Folds
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


class LinearSVM(AutoC):
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
        c_selection: str = "kfold",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"classifier.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self._init_C(C, c_grid, cv_folds, metric, c_selection, random_state)
        self.backend = backend
        self.label = f"linear_svm ({backend})"
        self.max_iter, self.tol, self.dual = int(max_iter), float(tol), dual
        self.model: Any = None
        self.converged: bool | None = None
        self.convergence: dict[str, Any] = {}  # the final fit's (tlbench/classifiers/convergence.py)
        self._refit_init: np.ndarray | None = None  # the kernel solver's refit, to start L-BFGS from
        self._grid_refits: dict[float, torch.Tensor] = {}  # C=auto's kernel-space refits, per C
        self.kernel_info: dict[str, Any] = {}  # the kernel solver's last run

    def _fit_one(self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None) -> Any:
        if self.backend == "torch":
            return TorchSquaredHingeSVM(C=C, max_iter=self.max_iter, tol=self.tol).fit(features, labels, init=init)
        svc = LinearSVC(C=C, max_iter=self.max_iter, tol=self.tol, dual=self.dual, random_state=self.random_state)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(features, labels)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        gradient = tolerance = None
        if not converged:  # liblinear does not say how far it got: the primal gradient, as the torch rule
            check = TorchSquaredHingeSVM(C=C, tol=self.tol)
            gradient, tolerance = check.gradient_at(features, labels, svc.coef_, svc.intercept_)
        svc.convergence = convergence_record(converged, int(np.max(svc.n_iter_)), self.max_iter, gradient, tolerance)
        return svc

    def _kernel_solve(
        self, features: np.ndarray, labels: np.ndarray, folds: Folds, c_values: list[float]
    ) -> tuple[list[list[np.ndarray]], dict[float, torch.Tensor], list[dict[str, Any]]]:
        """Every fold, plus all training rows (the refit), for every class in one batch of columns on
        one Gram matrix; one solve per C, ascending, each warm-started from the previous C. Returns the
        held-out predictions [fold][C], the refit's coefficients (n, K) per C and the (fold, C) solves
        that did not converge (the refit's needs not: L-BFGS finishes it in the primal)."""
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
        beta, converged, newton, products, refit, unconverged = None, True, 0, 0, {}, []
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
                if not bool(result.converged[i]):
                    norm0 = float(result.grad_norm0[i])
                    gradient = float(result.grad_ratio[i]) * norm0  # Newton steps at this C as iterations
                    record = convergence_record(False, result.newton_steps, self.max_iter, gradient, self.tol * norm0)
                    unconverged.append({"fold": i, "C": float(c), **record})
            refit[c] = beta.view(n, f + 1, k)[:, f]
        self.kernel_info = {"converged": converged, "newton_steps": newton, "gram_products": products}
        return predictions, refit, unconverged

    def _weights_from_beta(self, features: np.ndarray, beta: torch.Tensor) -> np.ndarray:
        """w = sum_i beta_i [x_i, 1] as (K, D+1), row chunk by row chunk."""
        x = as_tensor(features, beta.device)
        w = torch.zeros(beta.shape[1], x.shape[1] + 1, device=beta.device)
        for start, chunk in tensor_chunks(x, beta.device):
            w[:, :-1] += beta[start : start + chunk.shape[0]].T @ chunk
        w[:, -1] = beta.sum(0)
        return w.cpu().numpy()

    def _grid_predictions(
        self, features: np.ndarray, labels: np.ndarray, folds: Folds
    ) -> tuple[list[list[np.ndarray]], list[dict[str, Any]], dict[str, Any]]:
        """The grid in kernel space when it applies (its refits kept in _grid_refits for the final
        fit to start from); else ascending C, the torch backend warm-starting each C from the
        previous one on the same fold."""
        self._grid_refits = {}
        if not (self.backend == "torch" and kernel_applies(features)):
            return super()._grid_predictions(features, labels, folds)
        predictions, self._grid_refits, unconverged = self._kernel_solve(features, labels, folds, self.c_grid)
        solver = {"solver": "kernel Newton-CG, all folds and classes at once", **self.kernel_info}
        return predictions, unconverged, solver

    def fit(self, features: np.ndarray, labels: np.ndarray, folds: Folds | None = None) -> LinearSVM:
        """`folds` ((train rows, held-out rows) per fold, indices into `features`) score the C=auto grid
        instead of the stratified k-fold, and the final model is fitted on all rows given: for the
        validation protocol, pass train + val rows and folds=[(train_rows, val_rows)]."""
        if self._select_C(features, labels, folds):
            # with the kernel solver, the refit's kernel-space solution at the chosen C is the start
            if self.chosen_C in self._grid_refits:
                self._refit_init = self._weights_from_beta(features, self._grid_refits[self.chosen_C])
            self._grid_refits = {}
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
        self.convergence = self.model.convergence
        self.converged = self.convergence["converged"]
        warn_fit(self.label, self.chosen_C, self.convergence)
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
        if self.backend == "sklearn" and self.model is not None:
            record["iterations"] = self.convergence["iterations"]
            if self.convergence["gradient"] is not None:  # measured when liblinear did not converge
                record.update(grad_norm=self.convergence["gradient"], target=self.convergence["tolerance"])
        if self.backend == "torch" and self.model is not None:
            keys = ("objective", "grad_norm", "target", "iterations", "float64_iterations", "evaluations", "device")
            record.update({k: self.model.info[k] for k in keys})
            record["solver"] = "kernel Newton-CG, then L-BFGS in the primal" if self.kernel_info else "L-BFGS"
            if self.kernel_info and self.C != "auto":
                record["kernel_newton"] = self.kernel_info
        return self._describe_C(record)
