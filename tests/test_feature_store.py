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


def test_writer_killed_mid_write_leaves_no_trusted_entry(tmp_path):
    """SIGKILL a process while it writes a large entry: no final file, and the next run misses."""
    import signal
    import subprocess
    import sys
    import time

    key = cache_key(**BASE)
    script = (
        "import numpy as np\n"
        "from tlbench.embedding.store import FeatureSet, FeatureStore\n"
        "n = 40_000\n"
        "fs = FeatureSet(np.ones((n, 4000), np.float32), np.zeros(n, np.int64), np.arange(n), [], [('a', 4000)])\n"
        f"FeatureStore({str(tmp_path)!r}).save({key!r}, fs, {{}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while not list(tmp_path.glob("*.tmp")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert list(tmp_path.glob("*.tmp")), "the writer should be mid-write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = FeatureStore(tmp_path)
    assert not store.path(key).exists()
    assert store.load(key) is None


def test_stale_temporaries_are_removed_on_the_next_write(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    stale, fresh = tmp_path / f".{key}.old.tmp", tmp_path / f".{key}.young.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    store.save(key, make_set(), {})
    assert not stale.exists()
    assert fresh.exists(), "a young temporary may belong to a concurrent writer"


def test_empty_entry_is_a_miss_not_a_crash(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.path(key).write_bytes(b"")
    assert store.load(key) is None
