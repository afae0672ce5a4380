"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images, usable with no network."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from tlbench.data.registry import DatasetInfo, DatasetSplits, register_dataset
from tlbench.data.samples import ArraySamples
from tlbench.data.subsets import stratified_split

INFO = DatasetInfo(
    title="scikit-learn digits",
    num_classes=10,
    metric="top1",
    layout="(none: bundled with scikit-learn)",
    split_sizes={"train": 1257, "test": 540},
    instructions="nothing to download: the images ship with scikit-learn (sklearn.datasets.load_digits)",
    bundled=True,
)


@register_dataset("digits", INFO)
def digits(test_fraction: float = 0.3, split_seed: int = 0, root: str | None = None) -> DatasetSplits:
    """A fixed stratified train/test split; images are 8x8 grayscale, scaled from 0..16 to 0..255.

    The transform of the backbone then resizes them to its input size. `root` is ignored (the data
    ships with scikit-learn); it is accepted so that every dataset takes one.
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
