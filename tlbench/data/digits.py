"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, usable with no network."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from tlbench.data.registry import DatasetSplits, register_dataset
from tlbench.data.samples import ArraySamples
from tlbench.data.splits import stratified_split


@register_dataset("digits")
def digits(test_fraction: float = 0.3, split_seed: int = 0) -> DatasetSplits:
    """A fixed stratified train/test split; images are 8x8 grayscale, scaled from 0..16 to 0..255.

    The transform of the backbone then resizes them to its input size.
    """
    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, test_fraction, split_seed, what="digits test split")
    return DatasetSplits(
        name="digits",
        classes=[str(c) for c in bunch.target_names],
        splits={
            "train": ArraySamples(images[train], labels[train], "digits/train"),
            "test": ArraySamples(images[test], labels[test], "digits/test"),
        },
    )
