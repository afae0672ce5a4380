"""A batched linear SVM in torch: LinearSVC's objective, every class at once, on the GPU when there is one.

For each class k (one-vs-rest, y in {-1, +1}), with the intercept as a constant feature of value
`intercept_scaling` that is regularised like the weights (as liblinear, hence LinearSVC, does):

    f_k(w) = 0.5 * ||w||^2 + C * sum_i max(0, 1 - y_i * w . [x_i, s])^2

The sum over k is minimised by L-BFGS on the (K, D+1) weight matrix: one matrix product per
evaluation serves all classes. The squared hinge is differentiable, so L-BFGS converges to the same
optimum as liblinear; `describe()` reports the final objective and gradient norm. Features may be
int8 (the FNE's {-1, 0, 1}): they are converted to float in row chunks at each evaluation, never as a
whole float32 copy of the matrix.

The stopping rule is liblinear's primal one (TRON) taken over all classes together:
||grad f(w)|| <= tol * ||(min(pos_k, neg_k) / l) grad f_k(0)||, the gradient at w = 0 whatever the
starting point, so a warm start does not change what "converged" means.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tlbench.classifiers.chunks import as_tensor, default_device, linear_scores, row_chunks


class TorchSquaredHingeSVM:
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
        self.info: dict[str, Any] = {}

    # --- the objective, in row chunks ---
    def _objective(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value and gradient, summed over classes (float64 accumulation of the float32 products)."""
        grad = w.clone()  # from 0.5 ||w||^2
        value = 0.5 * (w.double() ** 2).sum()
        for start, chunk in row_chunks(x, self.device):
            yc = y[start : start + chunk.shape[0]]
            margin = 1 - yc * (chunk @ w[:, :-1].T + self.intercept_scaling * w[:, -1])
            active = margin.clamp(min=0)
            value = value + self.C * (active.double() ** 2).sum()
            coeff = -2 * self.C * active * yc  # d/dscore
            grad[:, :-1] += coeff.T @ chunk
            grad[:, -1] += self.intercept_scaling * coeff.sum(dim=0)
        return value, grad

    def fit(self, features: np.ndarray, labels: np.ndarray, init: np.ndarray | None = None) -> TorchSquaredHingeSVM:
        """`init`: (K, D+1) weights to start from (a warm start across C values)."""
        self.classes_, encoded = np.unique(labels, return_inverse=True)
        x = as_tensor(features, self.device)
        k, d = len(self.classes_), x.shape[1]
        y = -torch.ones(x.shape[0], k, device=self.device)
        y[torch.arange(x.shape[0]), torch.from_numpy(encoded).to(self.device)] = 1.0
        w0 = torch.zeros(k, d + 1, device=self.device) if init is None else torch.as_tensor(init, device=self.device)
        w = w0.clone().float().requires_grad_(False)
        _, g0 = self._objective(x, y, torch.zeros_like(w))
        positives = (y > 0).sum(dim=0).float()
        scale = torch.minimum(positives, x.shape[0] - positives) / x.shape[0]  # liblinear's min(pos, neg) / l
        target = self.tol * max(float((scale[:, None] * g0).norm()), 1e-12)

        optimizer = torch.optim.LBFGS(
            [w.requires_grad_()],
            lr=1,
            max_iter=self.max_iter,
            tolerance_grad=0,  # the stop is ours: a relative gradient norm, like liblinear's
            tolerance_change=0,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
        state: dict[str, Any] = {"evaluations": 0, "grad_norm": float("inf")}

        def closure() -> torch.Tensor:
            value, grad = self._objective(x, y, w.detach())
            if state["evaluations"] == 0:
                state["first"] = (value, grad)
            w.grad = grad
            state["evaluations"] += 1
            state["grad_norm"] = float(grad.norm())
            if state["grad_norm"] <= target:  # converged: a zero gradient makes L-BFGS stop
                w.grad = torch.zeros_like(grad)
            return value.float()

        optimizer.step(closure)
        w = w.detach()
        # stopped at the starting point (a converged warm start): its evaluation is the final one
        value, grad = state["first"] if state["evaluations"] == 1 else self._objective(x, y, w)
        self.coef_ = w[:, :-1].cpu().numpy()
        self.intercept_ = (self.intercept_scaling * w[:, -1]).cpu().numpy()
        self.weights_ = w.cpu().numpy()
        self.info = {
            "objective": float(value),
            "grad_norm": float(grad.norm()),
            "converged": float(grad.norm()) <= target * 1.0001,
            "target": target,
            "evaluations": state["evaluations"],
            "device": str(self.device),
        }
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        assert self.weights_ is not None, "fit first"
        w = torch.from_numpy(self.weights_).to(self.device)
        with torch.no_grad():
            return linear_scores(as_tensor(features, self.device), w, self.device, self.intercept_scaling).cpu().numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(features).argmax(axis=1)]


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
