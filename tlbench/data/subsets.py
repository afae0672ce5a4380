"""Seeded, stratified subsets of a labelled listing, drawn afresh on each call: a held-out part (the test
split of a dataset without an official one, a validation holdout) and the few-shot per-class training
subset. Splits that must stay identical across library versions are stored instead (`stored_splits`)."""

from __future__ import annotations

import hashlib
import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from tlbench.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

SUBSETS_FILE = "subsets.npz"  # in the run directory: the rows of each subset split


@dataclass(frozen=True)
class SplitSubset:
    """A split that is rows of another one (its source): a validation holdout, a few-shot draw. The
    features of a subset are the source's rows, so every draw reuses one extraction of the source."""

    source: str  # the source split's name ("train")
    rows: np.ndarray  # sorted indices into the source split
    selection: dict[str, Any] = field(default_factory=dict)  # the settings that drew it (k, seeds, fraction)

    def record(self) -> dict[str, Any]:
        """For results.json: what drew the rows, how many, and a digest of them (the rows: subsets.npz)."""
        rows = np.asarray(self.rows, dtype=np.int64)
        return {
            "source": self.source,
            **self.selection,
            "rows": len(rows),
            "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest()[:16],
            "file": SUBSETS_FILE,
        }


def write_subset_rows(run_dir: str | Path, subsets: dict[str, SplitSubset]) -> Path | None:
    """subsets.npz: each subset split's rows of its source, as int64 (None when there is no subset)."""
    if not subsets:
        return None
    path = Path(run_dir) / SUBSETS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **{split: np.asarray(s.rows, dtype=np.int64) for split, s in subsets.items()})
    return path


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


def per_class_subset(labels: np.ndarray, per_class: int, seed: int, classes: Sequence[str] | None = None) -> np.ndarray:
    """Sorted indices of `per_class` images of every class (all of a smaller class), drawn with `seed`:
    the few-shot training sets of "does it work with little data". A class with fewer images than
    `per_class` keeps all of them, with a warning naming it (by `classes[label]` when given)."""
    if isinstance(per_class, bool) or not isinstance(per_class, numbers.Integral) or per_class < 1:
        raise ConfigError(
            f"dataset.train_per_class must be >= 1, a whole number (training images per class; null uses "
            f"every training image); got {per_class!r}"
        )
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    present = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in present]
    short = [(int(c), len(m)) for c, m in zip(present, members) if len(m) < per_class]
    if short:
        _warn_short_classes(per_class, short, len(present), len(labels), classes)
    chosen = [rng.choice(m, size=min(per_class, len(m)), replace=False) for m in members]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


SHOWN_CLASSES = 10  # classes named in the warning; the rest are counted


def _warn_short_classes(
    per_class: int, short: list[tuple[int, int]], num_classes: int, num_images: int, classes: Sequence[str] | None
) -> None:
    shown = ", ".join(f"{classes[c] if classes is not None else c} ({n})" for c, n in short[:SHOWN_CLASSES])
    more = f" and {len(short) - SHOWN_CLASSES} more" if len(short) > SHOWN_CLASSES else ""
    if len(short) == num_classes:
        log.warning(
            "dataset.train_per_class=%d is more than every class has: no class is subsampled and all %d "
            "training images are used. Images per class: %s%s",
            per_class,
            num_images,
            shown,
            more,
        )
    else:
        log.warning(
            "dataset.train_per_class=%d is more than %d of %d classes have; they get all their training "
            "images (fewer than %d): %s%s",
            per_class,
            len(short),
            num_classes,
            per_class,
            shown,
            more,
        )
