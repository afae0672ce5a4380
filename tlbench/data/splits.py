"""Seeded stratified splitting, shared by every dataset without an official split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from tlbench.errors import DatasetError


def stratified_split(
    labels: np.ndarray, holdout_fraction: float, seed: int, what: str = "split"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), stratified by label and fixed by `seed`; both sorted."""
    if not 0.0 < holdout_fraction < 1.0:
        raise DatasetError(f"{what}: the fraction must lie strictly between 0 and 1, got {holdout_fraction}")
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        rare = [int(c) for c in np.flatnonzero((counts > 0) & (counts < 2))]
        raise DatasetError(
            f"{what}: classes {rare} have a single image, so a stratified split cannot put one in "
            "each part. Add images, or give the split explicitly (train/ and test/ folders)."
        )
    try:
        kept, held = train_test_split(
            np.arange(len(labels)), test_size=holdout_fraction, random_state=seed, stratify=labels
        )
    except ValueError as exc:  # e.g. fewer held-out slots than classes
        raise DatasetError(f"{what}: cannot split {len(labels)} images stratified: {exc}") from exc
    return np.sort(kept), np.sort(held)


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` images of every class (all of a smaller class), drawn with `seed`:
    the few-shot training sets of "does it work with little data"."""
    if per_class < 1:
        raise DatasetError(f"dataset.train_per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen = [
        rng.choice(members, size=min(per_class, len(members)), replace=False)
        for members in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(chosen))
