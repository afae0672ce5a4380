"""FeatureStore: keys change with any input, hits when none does, survives a crash mid-write."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tlbench.embedding.store import FeatureSet, FeatureStore, cache_key

BASE = {
    "backbone": "vgg16",
    "source": "torchvision",
    "weights": "sha256:abc",
    "taps": ["features.1", "classifier.1"],
    "transform": "Resize(256)+CenterCrop(224)",
    "dataset": "digits",
    "dataset_params": {"test_fraction": 0.3},
    "split": "train",
    "content": "deadbeef",
}


def make_set(n: int = 5, d: int = 4) -> FeatureSet:
    rng = np.random.default_rng(0)
    return FeatureSet(
        features=rng.normal(size=(n, d)).astype(np.float32),
        labels=np.arange(n) % 2,
        indices=np.arange(n) * 2,
        skipped=[1, 3],
        layout=[("a", 3), ("b", 1)],
    )


@pytest.mark.parametrize(
    "field,value",
    [
        ("backbone", "resnet50"),
        ("source", "timm"),
        ("weights", "sha256:abd"),
        ("taps", ["features.1"]),
        ("transform", "Resize(224)"),
        ("dataset", "imagefolder"),
        ("dataset_params", {"test_fraction": 0.2}),
        ("split", "test"),
        ("content", "deadbeef0"),
    ],
)
def test_key_changes_when_any_input_changes(field, value):
    assert cache_key(**{**BASE, field: value}) != cache_key(**BASE)


def test_key_is_stable_and_order_independent():
    assert cache_key(**BASE) == cache_key(**dict(reversed(list(BASE.items()))))


def test_roundtrip_and_hit(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    assert store.load(key) is None
    original = make_set()
    store.save(key, original, {"note": "x"})
    loaded = store.load(key)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.features, original.features)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    np.testing.assert_array_equal(loaded.indices, original.indices)
    assert loaded.skipped == [1, 3]
    assert loaded.layout == [("a", 3), ("b", 1)]
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"


def test_crash_mid_write_leaves_no_trusted_entry(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(key, make_set(), {})
    monkeypatch.undo()
    assert store.load(key) is None
    assert not list(tmp_path.glob("*.tmp")), "the partial temporary file is removed"
    store.save(key, make_set(), {})
    assert store.load(key) is not None


def test_truncated_entry_is_set_aside_and_missed(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.save(key, make_set(), {})
    path = store.path(key)
    path.write_bytes(path.read_bytes()[:100])  # e.g. a disk-full write by an older tool
    assert store.load(key) is None
    assert not path.exists() and path.with_suffix(".corrupt").exists()
