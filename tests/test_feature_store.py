"""FeatureStore: keys change with any input, hits when none does, survives a crash mid-write;
the streaming FeatureWriter gives exactly what an in-memory assembly gives."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from tlbench.embedding.store import FeatureSet, FeatureStore, FeatureWriter, cache_key, read_entry
from tlbench.errors import StorageFullError, TlbenchError

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
    assert not list(tmp_path.glob(".*")), "no temporary folder is left behind"
    assert isinstance(loaded.features, np.memmap), "a hit is memory-mapped, not read whole"
    assert np.load(store.path(key) / "features.npy").shape == (5, 4)  # a plain .npy for any tool


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
    assert not list(tmp_path.glob(".*.tmp")), "the partial temporary folder is removed"
    store.save(key, make_set(), {})
    assert store.load(key) is not None


def test_truncated_entry_is_set_aside_and_missed(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.save(key, make_set(), {})
    version = store.path(key).resolve()
    features = version / "features.npy"
    features.write_bytes(features.read_bytes()[:150])  # e.g. a disk-full write by an older tool
    assert store.load(key) is None
    assert not store.path(key).exists() and version.with_name(f"{version.name}.corrupt").is_dir()
    store.save(key, make_set(), {})  # and it is extracted again
    assert store.load(key) is not None


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
    stale, fresh, writing = (tmp_path / f".{key}.{name}.tmp" for name in ("old", "young", "busy"))
    for folder in (stale, fresh, writing):
        folder.mkdir()
        (folder / "features.npy").write_bytes(b"partial")
    for path in (stale, stale / "features.npy", writing):
        os.utime(path, (0, 0))  # `writing`: an old folder whose features.npy is still growing
    store.save(key, make_set(), {})
    assert not stale.exists()
    assert fresh.exists(), "a young temporary may belong to a concurrent writer"
    assert writing.exists(), "a long extraction appends to features.npy; its folder's time does not move"


def test_replaced_versions_go_once_stale(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.save(key, make_set(), {})
    first = store.path(key).resolve()
    store.save(key, make_set(), {})
    assert first.is_dir(), "a replaced version stays a while: other nodes may still read it"
    for path in (first, *first.iterdir()):
        os.utime(path, (0, 0))
    store.save(key, make_set(), {})
    assert not first.exists()
    assert len([p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink()]) == 2  # current and previous


def test_empty_entry_is_a_miss_not_a_crash(tmp_path):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.path(key).mkdir(parents=True)
    assert store.load(key) is None


def test_streamed_writer_equals_in_memory_assembly(tmp_path):
    """Batches out of order, a repeated index and undecodable rows: the entry holds each decoded
    index once, by index, exactly the rows an in-memory concatenation would select."""
    rng = np.random.default_rng(3)
    batches = []
    for indices in ([4, 5, 6], [0, 1, 2, 3], [6, 7]):  # 6 twice (a padded sampler)
        idx = np.asarray(indices)
        batches.append((rng.normal(size=(len(idx), 7)).astype(np.float32), idx % 3, idx, idx != 2))
    writer = FeatureWriter(tmp_path / "entry")
    for features, labels, indices, ok in batches:
        writer.append(features, labels, indices, ok)
    streamed = writer.finish([("a", 7)], {"note": "x"})

    features = np.concatenate([b[0] for b in batches])
    indices = np.concatenate([b[2] for b in batches])
    ok = np.concatenate([b[3] for b in batches])
    unique, first = np.unique(indices[ok], return_index=True)
    np.testing.assert_array_equal(streamed.features, features[ok][first])
    np.testing.assert_array_equal(streamed.indices, unique)
    np.testing.assert_array_equal(streamed.labels, unique % 3)
    assert streamed.skipped == [2]
    meta = json.loads((tmp_path / "entry" / "meta.json").read_text())
    assert meta["rows"] == 7 and meta["dim"] == 7 and meta["bytes_per_feature"] == 4 and meta["note"] == "x"
    assert read_entry(tmp_path / "entry").features.shape == (7, 7)


def test_writer_stores_int8_at_one_byte_per_feature(tmp_path):
    ternary = np.random.default_rng(0).integers(-1, 2, size=(50, 30)).astype(np.int8)
    writer = FeatureWriter(tmp_path / "entry", dtype=np.int8)
    writer.append(ternary[:20], np.zeros(20), np.arange(20))
    writer.append(ternary[20:], np.zeros(30), np.arange(20, 50))
    entry = writer.finish([("fne", 30)])
    assert entry.features.dtype == np.int8
    np.testing.assert_array_equal(entry.features, ternary)
    assert (tmp_path / "entry" / "features.npy").stat().st_size == 128 + 50 * 30


def test_writer_without_rows_gives_an_empty_matrix_of_the_layout_width(tmp_path):
    writer = FeatureWriter(tmp_path / "entry")
    writer.mark_skipped([0, 1])
    entry = writer.finish([("a", 3), ("b", 2)])
    assert entry.features.shape == (0, 5) and entry.skipped == [0, 1]


def test_a_new_entry_replaces_the_old_one_while_readers_keep_theirs(tmp_path):
    """A split re-extracted under the same key (skipped images that decode again after a transient
    read error) replaces the entry; a reader that mapped the old one still reads it whole."""
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    first = make_set()
    store.save(key, first, {"job": 1})
    reader = store.load(key)
    repaired = FeatureSet(first.features + 1, first.labels, first.indices, [], first.layout)
    store.save(key, repaired, {"job": 2})
    again = store.load(key)
    np.testing.assert_array_equal(again.features, repaired.features)
    assert again.skipped == []
    np.testing.assert_array_equal(reader.features, first.features)  # its own version, unchanged
    assert not list(tmp_path.glob(".*")), "no temporary folder or link is left behind"


def test_a_batch_of_another_width_is_refused(tmp_path):
    writer = FeatureWriter(tmp_path / "entry")
    writer.append(np.zeros((2, 3)), np.zeros(2), np.arange(2))
    with pytest.raises(ValueError, match="rows of 4 features after rows of 3"):
        writer.append(np.zeros((2, 4)), np.zeros(2), np.arange(2, 4))


def test_two_jobs_committing_the_same_key_both_succeed(tmp_path):
    """Two sweep points extracting the same features at once: both commits succeed, the later one
    is current, and a reader that loaded in between keeps the earlier version whole."""
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    first, second = store.writer(key), store.writer(key)
    first.append(np.zeros((3, 2)), np.zeros(3), np.arange(3))
    second.append(np.ones((3, 2)), np.zeros(3), np.arange(3))
    store.commit(key, first, [("a", 2)], {})
    reader = store.load(key)
    store.commit(key, second, [("a", 2)], {})
    assert (reader.features == 0).all() and (store.load(key).features == 1).all()
    assert reader.entry_id != store.load(key).entry_id


class FillingDisk:
    """A file handle whose disk fills up after `room` bytes: later writes raise OSError(errno_)."""

    def __init__(self, handle, room: int, errno_: int = errno.ENOSPC) -> None:
        self.handle, self.room, self.errno = handle, room, errno_

    def write(self, data) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self.room:
            raise OSError(self.errno, os.strerror(self.errno))
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


def assert_full_disk_error(error: StorageFullError, root) -> None:
    message = str(error)
    assert isinstance(error, TlbenchError), "the CLI prints it as `tlbench: error: ...` (exit 2)"
    assert str(root) in message, "names the directory that filled up"
    assert "written" in message and "so far" in message, "says how much the entry had written"
    assert "Free space" in message and "paths.cache_dir=" in message and "cache=false" in message, message


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_while_appending_is_a_storage_error_and_leaves_nothing(tmp_path, code):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    writer = store.writer(key)
    writer._handle = FillingDisk(writer._handle, room=128 + 3 * 4 * 100, errno_=code)
    with pytest.raises(StorageFullError) as caught:
        for start in range(0, 30, 3):
            writer.append(np.ones((3, 100)), np.zeros(3), np.arange(start, start + 3))
    assert_full_disk_error(caught.value, tmp_path)
    assert ("quota" in str(caught.value)) == (code == errno.EDQUOT)
    assert not list(tmp_path.iterdir()), "the partial temporary folder is removed"
    writer.abort()  # the extraction's own clean-up afterwards is no error
    assert store.load(key) is None


def test_disk_full_while_finishing_leaves_nothing_and_keeps_the_current_version(tmp_path, monkeypatch):
    """A network file system reports a full disk at fsync; the version already there stays current."""
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)
    store.save(key, make_set(), {"job": 1})
    current = store.path(key).resolve()
    writer = store.writer(key)
    writer.append(np.ones((3, 4)), np.zeros(3), np.arange(3))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageFullError) as caught:
        store.commit(key, writer, [("a", 4)], {"job": 2})
    monkeypatch.undo()
    assert_full_disk_error(caught.value, tmp_path)
    assert not list(tmp_path.glob(".*")), "no temporary folder or link is left behind"
    assert store.path(key).resolve() == current and store.load(key) is not None


def test_disk_full_while_linking_removes_the_new_version(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path)
    key = cache_key(**BASE)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "symlink", full)
    with pytest.raises(StorageFullError) as caught:
        store.save(key, make_set(), {})
    monkeypatch.undo()
    assert_full_disk_error(caught.value, tmp_path)
    assert not list(tmp_path.iterdir()), "neither the version folder nor a link remains"


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    store = FeatureStore(tmp_path)
    writer = store.writer(cache_key(**BASE))
    writer._handle = FillingDisk(writer._handle, room=0, errno_=errno.EIO)
    with pytest.raises(OSError) as caught:
        writer.append(np.ones((3, 4)), np.zeros(3), np.arange(3))
    assert not isinstance(caught.value, StorageFullError) and caught.value.errno == errno.EIO
    writer.abort()
