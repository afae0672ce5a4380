"""Post-processing of extracted features, always fitted on the train split only.

`last_layer` normalizes each image's vector to unit L2 norm (the lab's single-layer baseline,
HPAI-BSC/tl-tradeoff src/fne/post_processing.py `PostProcessing.l2_norm`);
`fne` (Full-Network Embedding) standardizes and then discretizes each feature to {-1, 0, 1}:
x > 0.15 -> 1, x < -0.25 -> -1, otherwise 0 (Garcia-Gasulla et al. 2018). The steps, when several
are on, run in that order: L2 normalization, standardization, discretization.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np

from tlbench.embedding.store import row_slices


def read_rows(features: np.ndarray, rows: slice) -> np.ndarray:
    """features[rows]; from a memory-mapped matrix (the FeatureStore's float32 features) a copy, whose
    pages are then dropped from the map: pages touched through a map count in this process's RSS for
    as long as the map lives (after one pass, the whole matrix: 1.2 GB at 24k x 12,416 float32),
    dropped ones stay in the page cache only, where the kernel can reclaim them."""
    mapping = features.base if isinstance(features, np.memmap) else None
    if not (isinstance(mapping, mmap.mmap) and features.flags.c_contiguous and rows.step in (None, 1)):
        return features[rows]  # in memory, or a view of a map: read as it is
    chunk = np.array(features[rows])
    _, stop, _ = rows.indices(len(features))
    row_bytes = features.itemsize * int(np.prod(features.shape[1:]))
    end = features.offset % mmap.ALLOCATIONGRANULARITY + stop * row_bytes  # as np.memmap maps the file
    if end > 0:  # from the map's start: the kernel's fault-around also maps cached pages near a fault
        mapping.madvise(mmap.MADV_DONTNEED, 0, end)
    return chunk


@dataclass
class Standardizer:
    """Per-feature z-score with population std (ddof=0); a constant feature becomes 0, as in the
    original FNE code (no epsilon). Statistics in float64, two passes over row chunks, so a
    memory-mapped matrix is never copied whole."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> Standardizer:
        rows, dim = features.shape
        total = np.zeros(dim)
        for part in row_slices(rows, dim):
            total += read_rows(features, part).sum(axis=0, dtype=np.float64)
        self.mean = total / rows
        squares = np.zeros(dim)
        for part in row_slices(rows, dim):
            squares += ((read_rows(features, part) - self.mean) ** 2).sum(axis=0)
        self.std = np.sqrt(squares / rows)
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer.transform before fit")
        # (x - mean) / std in float64; a constant feature divides by inf instead of 0, giving 0 (as
        # np.divide(..., where=std != 0) into zeros did, in one pass fewer)
        out = np.subtract(features, self.mean, dtype=np.float64)
        out /= np.where(self.std != 0, self.std, np.inf)
        return out.astype(np.float32)


def discretize(standardized: np.ndarray, negative: float = -0.25, positive: float = 0.15) -> np.ndarray:
    """{-1, 0, 1} as int8: above `positive` -> 1, below `negative` -> -1, both bounds map to 0."""
    if negative > positive:
        raise ValueError(f"discretization thresholds must satisfy negative <= positive, got {negative} > {positive}")
    # two comparisons and a subtraction of their bytes: faster than masked assignment, the same values
    return (standardized > positive).view(np.int8) - (standardized < negative).view(np.int8)


L2_MODES = ("image", "layer")


def l2_blocks(mode: str, dim: int, layout: list[tuple[str, int]] | None) -> list[tuple[int, int]]:
    """Column ranges normalized separately: the whole vector (`image`), or each tap's columns
    (`layer`, as tl-tradeoff's `PostProcessing.l2_norm` over its layer offsets)."""
    if mode == "image":
        return [(0, dim)]
    if not layout:
        raise ValueError("l2_normalize=layer needs the features' layout (tap -> columns)")
    bounds, start = [], 0
    for _, width in layout:
        bounds.append((start, start + width))
        start += width
    if start != dim:
        raise ValueError(f"the layout covers {start} columns, the features have {dim}")
    return bounds


def l2_normalize(features: np.ndarray, blocks: list[tuple[int, int]]) -> np.ndarray:
    """Each row's columns in each block scaled to unit L2 norm (float64 sums); an all-zero block
    stays 0, as the original's nan_to_num(0 / 0)."""
    out = np.asarray(features, dtype=np.float32).copy()
    for start, stop in blocks:
        block = out[:, start:stop]
        norms = np.sqrt(np.square(block, dtype=np.float64).sum(axis=1, keepdims=True))
        np.divide(block, norms, out=block, where=norms > 0)
    return out


@dataclass
class FeaturePostprocess:
    """What a strategy does to features between extraction and the classifier."""

    standardize: bool = True
    discretize: bool = False
    negative: float = -0.25
    positive: float = 0.15
    l2_normalize: str | None = None  # None, image (whole vector) or layer (each tap's columns)

    def __post_init__(self) -> None:
        if self.l2_normalize not in (None, *L2_MODES):
            raise ValueError(f"l2_normalize must be null, image or layer, got {self.l2_normalize!r}")
        self.blocks: list[tuple[int, int]] = []
        if self.discretize and self.negative > self.positive:
            raise ValueError(
                f"discretization thresholds must satisfy negative <= positive, got {self.negative} > {self.positive}"
            )
        self.standardizer = Standardizer()

    def fit(self, train: np.ndarray, layout: list[tuple[str, int]] | None = None) -> FeaturePostprocess:
        """`layout`: (tap, width) in column order, needed by l2_normalize=layer."""
        if self.l2_normalize:
            self.blocks = l2_blocks(self.l2_normalize, train.shape[1], layout)
        if self.standardize:
            self.standardizer.fit(_Normalized(train, self.blocks) if self.l2_normalize else train)
        return self

    @property
    def dtype(self) -> np.dtype:
        """int8 for the FNE's {-1, 0, 1} (1 byte per feature), float32 otherwise."""
        return np.dtype(np.int8 if self.discretize else np.float32)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """In row chunks into one output array: the only full-size copy is the classifier's input."""
        out = np.empty(features.shape, dtype=self.dtype)
        for part in row_slices(*features.shape):
            chunk = read_rows(features, part)
            chunk = l2_normalize(chunk, self.blocks) if self.l2_normalize else chunk
            chunk = self.standardizer.transform(chunk) if self.standardize else chunk
            out[part] = discretize(chunk, self.negative, self.positive) if self.discretize else chunk
        return out

    def describe(self, train_transformed: np.ndarray | None = None) -> dict:
        info: dict = {
            "l2_normalize": self.l2_normalize,
            "standardize": self.standardize,
            "statistics": "train split, population std; zero-std features -> 0" if self.standardize else None,
            "discretize": self.discretize,
        }
        if self.discretize:
            info["thresholds"] = {"negative": self.negative, "positive": self.positive}
            if train_transformed is not None:
                counts = np.zeros(3, np.int64)  # of -1, 0, 1
                for part in row_slices(*train_transformed.shape, 1):
                    counts += np.bincount((train_transformed[part].ravel() + 1).astype(np.intp), minlength=3)
                total = counts.sum()
                info["train_value_fractions"] = {
                    str(v): round(float(c / total), 4) for v, c in zip((-1, 0, 1), counts) if c
                }
        if self.l2_normalize:
            info["l2_blocks"] = len(self.blocks)  # 1: the whole vector; else one per tap
        info["dtype"] = self.dtype.name
        info["bytes_per_feature"] = self.dtype.itemsize
        if train_transformed is not None:
            info["train_matrix_bytes"] = int(train_transformed.nbytes)
        if self.standardize and self.standardizer.std is not None:
            info["constant_features"] = int((self.standardizer.std == 0).sum())
        return info


class _Normalized:
    """Row slices of `features` L2-normalized on the fly: the standardizer's statistics of the
    normalized train rows without a normalized copy of the whole matrix."""

    def __init__(self, features: np.ndarray, blocks: list[tuple[int, int]]) -> None:
        self.features, self.blocks, self.shape = features, blocks, features.shape

    def __getitem__(self, rows: slice) -> np.ndarray:
        return l2_normalize(read_rows(self.features, rows), self.blocks)
