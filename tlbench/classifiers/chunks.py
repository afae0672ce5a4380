"""Row chunks of a feature matrix as float32 on the solver's device: int8 FNE features (and host
matrices on a GPU run) are converted a chunk at a time, never as one float32 copy of the whole matrix."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

CHUNK_ROWS = 8192


def as_tensor(features: np.ndarray, device: torch.device) -> torch.Tensor:
    """The features as a tensor; float matrices move to a GPU once, int8 ones stay where they are."""
    x = torch.from_numpy(np.ascontiguousarray(features))
    if device.type == "cuda" and x.dtype != torch.int8:
        x = x.to(device)
    return x


def row_chunks(x: torch.Tensor, device: torch.device, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, float32 rows [start, start + rows)) on `device`."""
    for start in range(0, x.shape[0], rows):
        yield start, x[start : start + rows].to(device, torch.float32, non_blocking=True)


def default_device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def linear_scores(x: torch.Tensor, w: torch.Tensor, device: torch.device, scaling: float = 1.0) -> torch.Tensor:
    """[x, scaling] @ w.T for all rows, chunk by chunk: w is (K, D+1), its last column the intercept
    weight of a constant feature `scaling`."""
    return torch.cat([chunk @ w[:, :-1].T + scaling * w[:, -1] for _, chunk in row_chunks(x, device)])
