"""Checksums of feature cache entries: a file whose bytes changed after it was written (same size, so
no truncation shows) is noticed on load, set aside like a truncated entry, logged and extracted
again; an untouched entry loads as before; an entry from before checksums loads, said once."""

from __future__ import annotations

import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tlbench.embedding.store import HEADER_BYTES, FeatureSet, FeatureStore, cache_key

KEY = cache_key(backbone="vgg16", dataset="digits", split="train", taps=["fne"])


def int8_set(n: int = 60, d: int = 30) -> FeatureSet:
    """An FNE-like entry: ternary int8 features (the case of the issue)."""
    rng = np.random.default_rng(0)
    return FeatureSet(
        features=rng.integers(-1, 2, size=(n, d)).astype(np.int8),
        labels=np.arange(n) % 3,
        indices=np.arange(n),
        skipped=[n + 1],
        layout=[("fne", d)],
    )


def flip(path: Path, position: int, count: int = 8) -> None:
    """Overwrite `count` bytes at `position` with different ones, keeping the file's size."""
    data = bytearray(path.read_bytes())
    size = len(data)
    for i in range(position, min(position + count, size)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def assert_set_aside(store: FeatureStore, version: Path, name: str, caplog) -> None:
    assert store.load(KEY) is None
    assert not store.path(KEY).exists(), "the link to the damaged version is removed"
    assert not version.exists() and version.with_name(f"{version.name}.corrupt").is_dir()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(version.name in m and name in m and "checksum" in m for m in warnings), warnings


@pytest.mark.parametrize(
    "name,where",
    [
        ("features.npy", "middle"),  # values of the matrix (the issue: top-1 100 % -> 36.7 %)
        ("features.npy", "end"),  # the last row
        ("labels.npy", "end"),
        ("indices.npy", "end"),
        ("skipped.npy", "end"),
    ],
)
def test_changed_bytes_are_noticed_set_aside_and_extracted_again(tmp_path, caplog, name, where):
    store = FeatureStore(tmp_path)
    original = int8_set()
    store.save(KEY, original, {})
    version = store.path(KEY).resolve()
    path = version / name
    flip(path, (path.stat().st_size + HEADER_BYTES) // 2 if where == "middle" else path.stat().st_size - 8)
    with caplog.at_level(logging.WARNING, logger="tlbench.embedding.store"):
        assert_set_aside(store, version, name, caplog)
    store.save(KEY, original, {})  # extracted again: a new version, loaded and verified
    again = store.load(KEY)
    assert again is not None
    np.testing.assert_array_equal(again.features, original.features)
    np.testing.assert_array_equal(again.labels, original.labels)


def test_a_changed_header_byte_is_noticed(tmp_path, caplog):
    """Whitespace in the .npy header parses the same; the checksum covers the header too."""
    store = FeatureStore(tmp_path)
    store.save(KEY, int8_set(), {})
    version = store.path(KEY).resolve()
    path = version / "features.npy"
    data = bytearray(path.read_bytes())
    assert data[HEADER_BYTES - 2 : HEADER_BYTES] == b" \n"
    data[HEADER_BYTES - 2] = ord("\t")
    path.write_bytes(bytes(data))
    assert np.load(path).shape == (60, 30), "still a valid .npy of the same shape"
    with caplog.at_level(logging.WARNING, logger="tlbench.embedding.store"):
        assert_set_aside(store, version, "features.npy", caplog)


def test_bytes_appended_to_features_are_noticed(tmp_path, caplog):
    store = FeatureStore(tmp_path)
    store.save(KEY, int8_set(), {})
    version = store.path(KEY).resolve()
    with open(version / "features.npy", "ab") as handle:
        handle.write(b"\x01" * 30)  # a row too many, after the header's count: np.load still reads it
    with caplog.at_level(logging.WARNING, logger="tlbench.embedding.store"):
        assert_set_aside(store, version, "features.npy", caplog)


def test_an_untouched_entry_loads_with_its_checksums(tmp_path, caplog):
    store = FeatureStore(tmp_path)
    original = int8_set()
    store.save(KEY, original, {"note": "x"})
    meta = json.loads((store.path(KEY) / "meta.json").read_text())
    checksums = meta["checksums"]
    assert checksums["algorithm"] == "sha256"
    assert set(checksums["files"]) == {"features.npy", "labels.npy", "indices.npy", "skipped.npy"}
    with caplog.at_level(logging.INFO, logger="tlbench.embedding.store"):
        loaded = store.load(KEY)
    assert loaded is not None and not caplog.records
    np.testing.assert_array_equal(loaded.features, original.features)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    np.testing.assert_array_equal(loaded.indices, original.indices)
    assert loaded.skipped == original.skipped and loaded.features.dtype == np.int8
    assert isinstance(loaded.features, np.memmap), "still memory-mapped after the check"


def test_a_streamed_commit_out_of_order_carries_checksums(tmp_path):
    """The extraction path: store.writer + commit, batches out of order with a repeated index (the
    rows are reordered at the end), float32; the entry verifies, and a changed value is noticed."""
    store = FeatureStore(tmp_path)
    writer = store.writer(KEY)
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(8, 5)).astype(np.float32)
    for indices in ([4, 5, 6], [0, 1, 2, 3], [6, 7]):
        writer.append(rows[indices], np.zeros(len(indices)), np.asarray(indices))
    store.commit(KEY, writer, [("a", 5)], {})
    loaded = store.load(KEY)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.features, rows)
    version = store.path(KEY).resolve()
    flip(version / "features.npy", HEADER_BYTES + 4, 4)
    assert store.load(KEY) is None and version.with_name(f"{version.name}.corrupt").is_dir()


def test_an_entry_without_checksums_loads_and_is_reported_once(tmp_path, caplog):
    """Entries of an older tlbench (no checksums in meta.json) stay usable: extraction is expensive."""
    store = FeatureStore(tmp_path)
    original = int8_set()
    store.save(KEY, original, {})
    meta_path = store.path(KEY) / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"]
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="tlbench.embedding.store"):
        first, second = store.load(KEY), store.load(KEY)
    assert first is not None and second is not None
    np.testing.assert_array_equal(first.features, original.features)
    notes = [r for r in caplog.records if "no checksums" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


def test_verifying_a_large_entry_keeps_memory_flat(tmp_path):
    """The check streams the files: a 48 MiB entry is verified with a few MiB of Python memory."""
    store = FeatureStore(tmp_path)
    n, d = 12_288, 1024
    features = np.lib.format.open_memmap(tmp_path / "source.npy", "w+", np.float32, (n, d))
    features[:] = 1.5
    store.save(KEY, FeatureSet(features, np.zeros(n, np.int64), np.arange(n), [], [("a", d)]), {})
    del features
    tracemalloc.start()
    try:
        loaded = store.load(KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded is not None and loaded.features.shape == (n, d)
    assert peak < 8 * 2**20, f"verifying took {peak / 2**20:.1f} MiB"
