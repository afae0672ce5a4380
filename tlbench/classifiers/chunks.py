"""Row chunks of a feature matrix in the solver's dtype on the solver's device: int8 FNE features (and
host matrices on a GPU run) are converted a chunk at a time, never as one float copy of the whole
matrix. A float64 chunk has half the rows of a float32 one, so a chunk's bytes do not depend on it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

CHUNK_ROWS = 8192  # float32 rows per chunk


def as_tensor(features: np.ndarray, device: torch.device) -> torch.Tensor:
    """The features as a tensor; float matrices move to a GPU once, int8 ones stay where they are."""
    x = torch.from_numpy(np.ascontiguousarray(features))
    if device.type == "cuda" and x.dtype != torch.int8:
        x = x.to(device)
    return x


def row_chunks(
    x: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32, rows: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, rows [start, start + rows) as `dtype` on `device`)."""
    rows = rows or CHUNK_ROWS * 4 // dtype.itemsize
    for start in range(0, x.shape[0], rows):
        yield start, x[start : start + rows].to(device, dtype, non_blocking=True)


def default_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def linear_scores(x: torch.Tensor, w: torch.Tensor, device: torch.device, scaling: float = 1.0) -> torch.Tensor:
    """[x, scaling] @ w.T for all rows, chunk by chunk in w's dtype: w is (K, D+1), its last column the
    intercept weight of a constant feature `scaling`."""
    return torch.cat([chunk @ w[:, :-1].T + scaling * w[:, -1] for _, chunk in row_chunks(x, device, w.dtype)])
