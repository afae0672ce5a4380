"""Row chunks of a feature matrix in the solver's dtype on the solver's device: int8 FNE features (and
host matrices on a GPU run) are converted a chunk at a time, never as one float copy of the whole
matrix. A chunk holds about CHUNK_BYTES whatever the dtype and the width, so the solver's memory
above its input does not grow with the rows (at 12,416 dims: 2,703 float32 or 1,351 float64 rows).
Also the torch linear models' shared prediction (`TorchLinearModel`), which scores in such chunks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from tlbench.classifiers.lbfgs import convergence

# 8,192 float32 rows a chunk were 400 MB at 12,416 dims: 270 MB more at the fit's peak, for about
# 10-25 % less time per objective evaluation than this (measured on 2 busy CPU cores)
CHUNK_BYTES = 128 * 2**20


def as_tensor(features: np.ndarray, device: torch.device) -> torch.Tensor:
    """The features as a tensor; float matrices move to a GPU once, int8 ones stay where they are."""
    x = torch.from_numpy(np.ascontiguousarray(features))
    if device.type == "cuda" and x.dtype != torch.int8:
        x = x.to(device)
    return x


def tensor_chunks(
    x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32, rows: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, rows [start, start + rows) as `dtype` on `device`); by default about CHUNK_BYTES a chunk."""
    rows = rows or max(1, CHUNK_BYTES // (max(1, math.prod(x.shape[1:])) * dtype.itemsize))
    for start in range(0, x.shape[0], rows):
        yield start, x[start : start + rows].to(device, dtype, non_blocking=True)


def default_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def linear_scores(x: torch.Tensor, w: torch.Tensor, device: torch.device, scaling: float = 1.0) -> torch.Tensor:
    """[x, scaling] @ w.T for all rows, chunk by chunk in w's dtype: w is (K, D+1), its last column the
    intercept weight of a constant feature `scaling`."""
    return torch.cat([chunk @ w[:, :-1].T + scaling * w[:, -1] for _, chunk in tensor_chunks(x, device, w.dtype)])


class TorchLinearModel:
    """What the torch SVM and logistic regression share once fitted: (K, D+1) float64 `weights_`
    whose last column weighs a constant feature `intercept_scaling`, scored in row chunks, and the
    convergence record of their L-BFGS `info` (`gradient_key`: the stopping rule's gradient)."""

    gradient_key: str
    intercept_scaling: float = 1.0
    device: torch.device
    max_iter: int
    classes_: np.ndarray | None
    weights_: np.ndarray | None
    info: dict[str, Any]

    @property
    def convergence(self) -> dict[str, Any]:
        """The stopping rule's quantities, as every classifier's fits report them."""
        return convergence(self.info, self.gradient_key, self.max_iter)

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        assert self.weights_ is not None, "fit first"
        w = torch.from_numpy(self.weights_).to(self.device)
        with torch.no_grad():
            x = as_tensor(features, self.device)
            return linear_scores(x, w, self.device, self.intercept_scaling).cpu().numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        assert self.classes_ is not None, "fit first"
        return self.classes_[self.decision_function(features).argmax(axis=1)]
