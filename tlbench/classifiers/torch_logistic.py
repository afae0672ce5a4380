"""Multinomial (softmax) logistic regression in torch: scikit-learn's LogisticRegression objective
(lbfgs), every class at once, on the GPU when there is one.

    f(W, b) = 0.5 * ||W||^2 + C * sum_i -log softmax(W x_i + b)_{y_i}

C multiplies the summed loss and the intercept b is not regularised, as in scikit-learn. With two
classes scikit-learn fits one weight vector (plain logistic regression); here the first class's row
is then held at zero, which is the same model. Minimised by L-BFGS (strong Wolfe) on the (K, D+1)
matrix [W, b], in float32 and, when that falls short of the tolerance, finished in float64
(tlbench/classifiers/lbfgs.py). It stops as scikit-learn's lbfgs does: max |gradient| <= tol on
scikit-learn's scaling of the objective (f / (C n)), i.e. max |grad f| <= tol * C * n. Int8 features
are converted in row chunks, never as a whole float copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tlbench.classifiers.chunks import TorchLinearModel, as_tensor, default_device, tensor_chunks
from tlbench.classifiers.lbfgs import minimize


class TorchSoftmaxRegression(TorchLinearModel):
    gradient_key = "grad_max"

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-4, device: str | None = None) -> None:
        if C <= 0:
            raise ValueError(f"classifier.C must be positive, got {C}")
        self.C, self.max_iter, self.tol = float(C), int(max_iter), float(tol)
        self.device = default_device(device)
        self.classes_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None  # (K, D); (1, D) for two classes, as scikit-learn
        self.intercept_: np.ndarray | None = None
        self.weights_: np.ndarray | None = None  # (K, D+1), for warm starts
        self.info: dict[str, Any] = {}

    def _objective(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value (accumulated in float64) and gradient over all rows, chunk by chunk, in w's dtype."""
        grad = w.clone()
        grad[:, -1] = 0  # the intercept is not regularised
        value = 0.5 * (w[:, :-1].double() ** 2).sum()
        for start, chunk in tensor_chunks(x, self.device, w.dtype):
            yc = y[start : start + chunk.shape[0]]
            log_p = torch.log_softmax(chunk @ w[:, :-1].T + w[:, -1], dim=1)
            value = value - self.C * log_p.gather(1, yc[:, None]).double().sum()
            coeff = log_p.exp()
            coeff[torch.arange(len(yc), device=self.device), yc] -= 1
            coeff *= self.C
            grad[:, :-1] += coeff.T @ chunk
            grad[:, -1] += coeff.sum(dim=0)
        if w.shape[0] == 2:
            grad[0] = 0  # binary: class 0's row stays at zero (one weight vector, as scikit-learn)
        return value, grad

    def fit(self, features: np.ndarray, labels: np.ndarray, init: np.ndarray | None = None) -> TorchSoftmaxRegression:
        """`init`: (K, D+1) weights to start from (a warm start across C values)."""
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        x = as_tensor(features, self.device)
        y = torch.from_numpy(encoded).to(self.device)
        k, n = len(self.classes_), x.shape[0]
        w0 = torch.zeros(k, x.shape[1] + 1, device=self.device)
        if init is not None:
            w0.copy_(torch.as_tensor(init))
        target = self.tol * self.C * n  # scikit-learn's gtol on its objective f / (C n)
        result = minimize(
            lambda w: self._objective(x, y, w), w0, lambda grad: float(grad.abs().max()) <= target, self.max_iter
        )
        self.weights_ = result.weights.cpu().numpy()  # float64: the weights the stopping rule was checked on
        rows = self.weights_[1:] if k == 2 else self.weights_
        self.coef_, self.intercept_ = rows[:, :-1], rows[:, -1]
        self.info = result.record(self.gradient_key, float(result.grad.abs().max()), target, self.device)
        return self


def softmax_objective(
    features: np.ndarray, labels: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float
) -> float:
    """scikit-learn's multinomial objective times C n, for any (coef, intercept) with K rows."""
    encoded = np.unique(labels, return_inverse=True)[1]
    scores = features.astype(np.float64) @ coef.T + intercept
    log_p = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
    return 0.5 * float((coef**2).sum()) - C * float(log_p[np.arange(len(labels)), encoded].sum())
