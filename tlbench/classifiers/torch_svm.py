"""A batched linear SVM in torch: LinearSVC's objective, every class at once, on the GPU when there is one.

For each class k (one-vs-rest, y in {-1, +1}), with the intercept as a constant feature of value
`intercept_scaling` that is regularised like the weights (as liblinear, hence LinearSVC, does):

    f_k(w) = 0.5 * ||w||^2 + C * sum_i max(0, 1 - y_i * w . [x_i, s])^2

The sum over k is minimised by L-BFGS on the (K, D+1) weight matrix: one matrix product per
evaluation serves all classes. The squared hinge is differentiable, so L-BFGS converges to the same
optimum as liblinear; `describe()` reports the final objective and gradient norm. L-BFGS runs in
float32 and, when that falls short of the tolerance, finishes in float64 (tlbench/classifiers/lbfgs.py);
the reported objective, gradient and weights are float64. Features may be int8 (the FNE's {-1, 0, 1}):
they are converted in row chunks at each evaluation, never as a whole float copy of the matrix.

The stopping rule is liblinear's primal one (TRON) taken over all classes together:
||grad f(w)|| <= tol * ||(min(pos_k, neg_k) / l) grad f_k(0)||, the gradient at w = 0 whatever the
starting point, so a warm start does not change what "converged" means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tlbench.classifiers.chunks import TorchLinearModel, as_tensor, default_device, tensor_chunks
from tlbench.classifiers.lbfgs import minimize


class TorchSquaredHingeSVM(TorchLinearModel):
    gradient_key = "grad_norm"

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-4,
        intercept_scaling: float = 1.0,
        device: str | None = None,
    ) -> None:
        if C <= 0:
            raise ValueError(f"classifier.C must be positive, got {C}")
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.intercept_scaling = float(intercept_scaling)
        self.device = default_device(device)
        self.classes_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None  # (K, D)
        self.intercept_: np.ndarray | None = None  # (K,)
        self.weights_: np.ndarray | None = None  # (K, D+1), for warm starts
        self.info: dict[str, Any] = {}

    # --- the objective, in row chunks ---
    def _objective(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value (accumulated in float64) and gradient, summed over classes, computed in w's dtype."""
        grad = w.clone()  # from 0.5 ||w||^2
        value = 0.5 * (w.double() ** 2).sum()
        for start, chunk in tensor_chunks(x, self.device, w.dtype):
            yc = y[start : start + chunk.shape[0]]
            margin = 1 - yc * (chunk @ w[:, :-1].T + self.intercept_scaling * w[:, -1])
            active = margin.clamp(min=0)
            value = value + self.C * (active.double() ** 2).sum()
            coeff = -2 * self.C * active * yc  # d/dscore
            grad[:, :-1] += coeff.T @ chunk
            grad[:, -1] += self.intercept_scaling * coeff.sum(dim=0)
        return value, grad

    def _problem(self, features: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The features as a tensor, the one-vs-rest labels (N, K) in {-1, +1} and the stopping
        rule's bound on ||grad||: tol * ||(min(pos_k, neg_k) / l) grad f_k(0)||."""
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        x = as_tensor(features, self.device)
        k, d = len(self.classes_), x.shape[1]
        y = -torch.ones(x.shape[0], k, device=self.device)
        y[torch.arange(x.shape[0]), torch.from_numpy(encoded).to(self.device)] = 1.0
        _, g0 = self._objective(x, y, torch.zeros(k, d + 1, device=self.device))
        positives = (y > 0).sum(dim=0).float()
        scale = torch.minimum(positives, x.shape[0] - positives) / x.shape[0]  # liblinear's min(pos, neg) / l
        return x, y, self.tol * max(float((scale[:, None] * g0).norm()), 1e-12)

    def fit(self, features: np.ndarray, labels: np.ndarray, init: np.ndarray | None = None) -> TorchSquaredHingeSVM:
        """`init`: (K, D+1) weights to start from (a warm start across C values)."""
        x, y, target = self._problem(features, labels)
        w0 = torch.zeros(y.shape[1], x.shape[1] + 1, device=self.device)
        if init is not None:
            w0 = torch.as_tensor(init, device=self.device)
        result = minimize(
            lambda w: self._objective(x, y, w), w0, lambda grad: float(grad.norm()) <= target, self.max_iter
        )
        w = result.weights
        self.weights_ = w.cpu().numpy()  # float64: the weights the stopping rule was checked on
        self.coef_ = self.weights_[:, :-1]
        self.intercept_ = self.intercept_scaling * self.weights_[:, -1]
        self.info = result.record(self.gradient_key, float(result.grad.norm()), target, self.device)
        return self

    def gradient_at(
        self, features: np.ndarray, labels: np.ndarray, coef: np.ndarray, intercept: np.ndarray
    ) -> tuple[float, float]:
        """(||grad|| in float64, the stopping rule's bound on it) of this objective at another solver's
        one-vs-rest (coef, intercept), e.g. LinearSVC's, whose single row for two classes is the second's."""
        x, y, target = self._problem(features, labels)
        w = np.hstack([coef, intercept[:, None] / self.intercept_scaling])
        if w.shape[0] == 1 and y.shape[1] == 2:
            w = np.vstack([-w, w])
        _, grad = self._objective(x, y, torch.from_numpy(w).to(self.device, torch.float64))
        return float(grad.norm()), target


def squared_hinge_objective(
    features: np.ndarray, labels: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float, scaling: float = 1.0
) -> float:
    """LinearSVC's primal objective summed over the one-vs-rest problems, for any (coef, intercept):
    the bias enters as the weight of a constant feature `scaling`, so intercept = scaling * w_b."""
    classes = np.unique(labels)
    x = features.astype(np.float64)
    total = 0.0
    for k, cls in enumerate(classes):
        y = np.where(labels == cls, 1.0, -1.0)
        w_b = intercept[k] / scaling
        margin = np.maximum(0.0, 1 - y * (x @ coef[k] + intercept[k]))
        total += 0.5 * (coef[k] @ coef[k] + w_b**2) + C * (margin**2).sum()
    return total
