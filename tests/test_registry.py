"""The dataset registry: listing, registering, building, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.data import available_datasets, build_dataset, register_dataset
from tlbench.data.registry import DatasetSplits
from tlbench.data.samples import ArraySamples
from tlbench.errors import ConfigError


def test_builtin_datasets_are_listed():
    assert {"digits", "imagefolder"} <= set(available_datasets())
    assert available_datasets() == sorted(available_datasets())


def test_register_and_build_a_dataset():
    @register_dataset("tiny_test_set")
    def tiny(size: int = 4) -> DatasetSplits:
        images = np.zeros((size, 8, 8), np.uint8)
        labels = np.arange(size) % 2
        return DatasetSplits("tiny_test_set", ["a", "b"], {"train": ArraySamples(images, labels, "t")})

    assert "tiny_test_set" in available_datasets()
    built = build_dataset("tiny_test_set", size=6)
    assert len(built.splits["train"]) == 6
    assert built.params == {"size": 6}, "builder parameters are recorded for the cache key"
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("tiny_test_set")(tiny)


def test_digits_split_is_fixed_and_stratified():
    first, second = build_dataset("digits"), build_dataset("digits")
    assert len(first.splits["train"]) == 1257 and len(first.splits["test"]) == 540
    assert first.splits["test"].fingerprint() == second.splits["test"].fingerprint()
    counts = np.bincount(first.splits["test"].labels)
    assert counts.min() >= 52 and counts.max() <= 56, "every digit is about 30 % of its images"
    image = first.splits["train"].load(0)
    assert image.mode == "RGB" and image.size == (8, 8)


def test_unknown_dataset_or_parameter():
    with pytest.raises(ConfigError, match=r"available: .*digits"):
        build_dataset("nope")
    with pytest.raises(ConfigError, match="does not take"):
        build_dataset("digits", colour=True)
