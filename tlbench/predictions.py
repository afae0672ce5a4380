"""Per-image predictions of a run (predictions.npz in the run directory): what paired tests on the
same test images (McNemar, a paired bootstrap) need, beside the aggregate metrics of results.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlbench.errors import TlbenchError

PREDICTIONS_FILE = "predictions.npz"


@dataclass
class SplitPredictions:
    """One evaluated split: rows in dataset-index order, undecodable images left out."""

    indices: np.ndarray  # (N,) int64: each image's index in the split's listing
    labels: np.ndarray  # (N,) int64 true classes
    predictions: np.ndarray  # (N,) int64 predicted classes


def write_predictions(run_dir: str | Path, splits: dict[str, SplitPredictions]) -> Path:
    """predictions.npz with arrays `<split>/indices`, `<split>/labels`, `<split>/predictions`."""
    path = Path(run_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, p in splits.items():
        arrays[f"{split}/indices"] = np.asarray(p.indices, dtype=np.int64)
        arrays[f"{split}/labels"] = np.asarray(p.labels, dtype=np.int64)
        arrays[f"{split}/predictions"] = np.asarray(p.predictions, dtype=np.int64)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temporary name
        np.savez(f, **arrays)
    tmp.replace(path)
    return path


def read_predictions(run_dir: str | Path) -> dict[str, SplitPredictions]:
    """The splits of a run's predictions.npz; a TlbenchError naming the file when it is missing."""
    path = Path(run_dir)
    path = path if path.suffix == ".npz" else path / PREDICTIONS_FILE
    if not path.is_file():
        raise TlbenchError(
            f"{path} does not exist: per-image predictions are written by extraction runs (strategy=fne, "
            "last_layer); run it again (its features come from the cache) to get them"
        )
    with np.load(path) as data:
        names = sorted({key.split("/")[0] for key in data.files})
        return {
            split: SplitPredictions(data[f"{split}/indices"], data[f"{split}/labels"], data[f"{split}/predictions"])
            for split in names
        }
