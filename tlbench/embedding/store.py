"""FeatureStore: extracted features on disk, keyed by everything that determines them.

Extraction is the expensive part of a benchmark; fitting classifiers is cheap and repeated.
An entry is a folder holding `features.npy` (rows ordered by dataset index), `labels.npy`,
`indices.npy`, `skipped.npy` and `meta.json`. A FeatureWriter streams rows into a temporary folder
as the batches come, so an extraction holds one batch in memory whatever the size of the dataset.
A complete folder becomes `<key>.<unique id>/` and is never changed again; `<key>` is a symbolic
link to the current one, swapped atomically. Readers resolve the link once, so they never see a
mixture of two versions, a crash mid-write leaves nothing a later run would trust, and two jobs
committing the same key at once both succeed (the last one's link stays). Replaced versions are
removed only after STALE_SECONDS, so readers on other nodes of a shared file system that mapped
them keep working. Entries load memory-mapped: a cache hit reads only the rows it touches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the meaning or layout of stored features changes
STALE_SECONDS = 3600
HEADER_BYTES = 128  # a fixed-size .npy header, rewritten in place once the row count is known
CHUNK_BYTES = 64 * 2**20  # rows are copied and reordered in pieces of about this size


@dataclass
class FeatureSet:
    """Features of one split, rows ordered by dataset index."""

    features: np.ndarray  # (N, D), float32 from extraction; possibly a read-only memory map
    labels: np.ndarray  # (N,) int64
    indices: np.ndarray  # (N,) int64 dataset indices
    skipped: list[int] = field(default_factory=list)  # dataset indices that could not be decoded
    layout: list[tuple[str, int]] = field(default_factory=list)  # (tap, dimension) in column order
    nonfinite_columns: int | None = None  # columns with a NaN/inf, counted as written; None: unknown
    entry_id: str | None = None  # the stored version this came from (its folder name), if any

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def cache_key(**parts: Any) -> str:
    """A stable digest of the parts (JSON with sorted keys); any change gives another key."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def row_chunks(rows: int, dim: int, itemsize: int = 8) -> Iterator[slice]:
    """Row ranges of about CHUNK_BYTES each (counted at `itemsize` bytes per value)."""
    step = max(1, CHUNK_BYTES // max(1, dim * itemsize))
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def _npy_header(rows: int, dim: int, dtype: np.dtype) -> bytes:
    """A version 1.0 .npy header padded to HEADER_BYTES, so it can be rewritten in place."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (int(rows), int(dim))})
    body_len = HEADER_BYTES - 10  # magic (6) + version (2) + length (2)
    body = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body.encode("latin1")


class FeatureWriter:
    """Appends batches of rows to `<folder>/features.npy`; `finish()` completes the folder.

    Rows that failed to decode (ok False) are recorded as skipped, not written. Rows arriving out of
    index order, or twice, are put in order once at the end, in chunks."""

    def __init__(self, folder: str | Path, dtype: Any = np.float32) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.dim: int | None = None
        self._labels: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._skipped: set[int] = set()
        self._nonfinite: np.ndarray | None = None  # per column: any NaN/inf so far
        self._handle = open(self.folder / "features.npy", "wb")  # noqa: SIM115 (closed in finish/abort)

    def append(self, features: Any, labels: Any, indices: Any, ok: Any = None) -> None:
        features, labels, indices = np.asarray(features), np.asarray(labels), np.asarray(indices)
        if features.ndim != 2 or len(features) != len(labels) or len(labels) != len(indices):
            raise ValueError(f"a batch needs (B, D) features and B labels and indices, got {features.shape}")
        if self.dim is None:
            self.dim = int(features.shape[1])
            self._handle.write(_npy_header(0, self.dim, self.dtype))
        elif features.shape[1] != self.dim:
            raise ValueError(f"rows of {features.shape[1]} features after rows of {self.dim}")
        keep = np.ones(len(labels), bool) if ok is None else np.asarray(ok, bool)
        self.mark_skipped(indices[~keep])
        rows = np.ascontiguousarray(features[keep], dtype=self.dtype)
        if self.dtype.kind == "f":  # counted now, so a cache hit need not read every value again
            bad = ~np.isfinite(rows).all(axis=0)
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        self._handle.write(rows.tobytes())
        self._labels.append(labels[keep].astype(np.int64))
        self._indices.append(indices[keep].astype(np.int64))
        self.rows += len(rows)

    def seen(self) -> tuple[np.ndarray, list[int]]:
        """Dataset indices of the rows written so far, and the skipped ones (for a coverage check
        before the entry is committed)."""
        indices = np.concatenate(self._indices) if self._indices else np.zeros(0, np.int64)
        return indices, sorted(self._skipped)

    def mark_skipped(self, indices: Any) -> None:
        self._skipped.update(int(i) for i in indices)

    def finish(self, layout: list[tuple[str, int]], meta: dict[str, Any] | None = None) -> FeatureSet:
        """Row count into the header, rows in index order, the small arrays and meta.json, fsynced."""
        if self.dim is None:  # no batch at all: an empty matrix of the layout's width
            self.dim = sum(d for _, d in layout)
            self._handle.write(_npy_header(0, self.dim, self.dtype))
        self._handle.seek(0)
        self._handle.write(_npy_header(self.rows, self.dim, self.dtype))
        _sync(self._handle)
        self._handle.close()
        indices = np.concatenate(self._indices) if self._indices else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        unique, first = np.unique(indices, return_index=True)
        if len(unique) != len(indices) or (first != np.arange(len(first))).any():
            self._reorder(first)
            indices, labels = unique, labels[first]
        skipped = np.setdiff1d(np.fromiter(self._skipped, np.int64, len(self._skipped)), indices)
        for name, array in (("labels", labels), ("indices", indices), ("skipped", skipped)):
            with open(self.folder / f"{name}.npy", "wb") as handle:
                np.save(handle, array)
                _sync(handle)
        record = {
            **(meta or {}),
            "layout": layout,
            "format": FORMAT_VERSION,
            "rows": len(indices),
            "dim": self.dim,
            "dtype": self.dtype.name,
            "bytes_per_feature": self.dtype.itemsize,
            "nonfinite_columns": int(self._nonfinite.sum()) if self._nonfinite is not None else 0,
        }
        with open(self.folder / "meta.json", "w") as handle:  # last: its presence marks a complete folder
            handle.write(json.dumps(record, indent=2, default=str))
            _sync(handle)
        return read_entry(self.folder)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _reorder(self, order: np.ndarray) -> None:
        """Rewrite features.npy with rows `order` (the first occurrence of each index, by index)."""
        source = np.load(self.folder / "features.npy", mmap_mode="r")
        target = self.folder / "features.sorted"
        with open(target, "wb") as handle:
            handle.write(_npy_header(len(order), self.dim or 0, self.dtype))
            for part in row_chunks(len(order), self.dim or 1, self.dtype.itemsize):
                handle.write(np.ascontiguousarray(source[order[part]]).tobytes())
            _sync(handle)
        del source
        os.replace(target, self.folder / "features.npy")


def read_entry(folder: str | Path) -> FeatureSet:
    """The FeatureSet of a complete entry folder, features memory-mapped read-only. Raises on any
    inconsistency (a missing file, a row count that disagrees)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    features = np.load(folder / "features.npy", mmap_mode="r")
    labels, indices = np.load(folder / "labels.npy"), np.load(folder / "indices.npy")
    expected = (int(meta["rows"]), int(meta["dim"]))
    if features.shape != expected or len(labels) != expected[0] or len(indices) != expected[0]:
        raise ValueError(f"entry {folder} has {features.shape} features for {expected}")
    return FeatureSet(
        features=features,
        labels=labels,
        indices=indices,
        skipped=[int(i) for i in np.load(folder / "skipped.npy")],
        layout=[(str(n), int(d)) for n, d in meta["layout"]],
        nonfinite_columns=meta.get("nonfinite_columns"),
        entry_id=folder.name,
    )


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        """The entry's link (a folder for entries written by another tool)."""
        return self.root / key

    def load(self, key: str) -> FeatureSet | None:
        """The stored FeatureSet, or None when absent or unreadable (then it is set aside)."""
        path = self.path(key)
        try:
            folder = path.resolve(strict=True)  # once: a concurrent commit swaps the link, not the folder
        except (FileNotFoundError, RuntimeError):
            return None
        try:
            return read_entry(folder)
        except (OSError, EOFError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            self._set_aside(key, folder, exc)
            return None

    def writer(self, key: str, dtype: Any = np.float32) -> FeatureWriter:
        """A writer into a temporary folder beside the entry; `commit(key, writer, ...)` completes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale(key)
        return FeatureWriter(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.root), dtype)

    def commit(
        self, key: str, writer: FeatureWriter, layout: list[tuple[str, int]], meta: dict[str, Any]
    ) -> FeatureSet:
        """Finish the writer, give the folder its final unique name and point the key's link at it
        (an atomic rename of a new link over the old one). The version it replaces stays until it
        is older than STALE_SECONDS."""
        try:
            writer.finish(layout, meta)
            version = self.root / f"{key}.{uuid.uuid4().hex[:12]}"
            os.replace(writer.folder, version)
        except BaseException:
            writer.abort()
            raise
        link = self.root / f".{key}.{version.name}.link"
        os.symlink(version.name, link)  # relative: the cache folder may be mounted elsewhere
        path = self.path(key)
        if path.is_dir() and not path.is_symlink():  # a plain folder (written by hand): set it aside
            self._set_aside(key, path, "a plain folder where a link was expected")
        os.replace(link, path)
        _sync_folder(self.root)
        return read_entry(version)

    def save(self, key: str, features: FeatureSet, meta: dict[str, Any]) -> Path:
        """A whole FeatureSet at once (through the same writer)."""
        writer = self.writer(key, features.features.dtype)
        try:
            for part in row_chunks(len(features.labels), max(features.dim, 1), features.features.dtype.itemsize):
                writer.append(features.features[part], features.labels[part], features.indices[part])
            writer.mark_skipped(features.skipped)
        except BaseException:
            writer.abort()
            raise
        self.commit(key, writer, features.layout, meta)
        return self.path(key)

    def _set_aside(self, key: str, folder: Path, reason: Any) -> None:
        """An unreadable version is renamed `<name>.corrupt` (kept for inspection) and the link
        removed if it still points there; a concurrent job doing the same is no error."""
        aside = folder.with_name(f"{folder.name}.corrupt")
        log.warning("feature cache entry %s is unreadable (%s); moved to %s and re-extracting", folder, reason, aside)
        with contextlib.suppress(FileNotFoundError):
            os.replace(folder, aside)
        path = self.path(key)
        with contextlib.suppress(OSError):
            if path.is_symlink() and os.readlink(path) == folder.name:
                path.unlink()

    def _remove_stale(self, key: str) -> None:
        """Temporary folders of this key left by a killed writer, and versions the link no longer
        points to. Both only once nothing in them changed for STALE_SECONDS: a young temporary
        folder may be a concurrent job still writing, a young old version may still be read."""
        current = os.readlink(self.path(key)) if self.path(key).is_symlink() else None
        now = time.time()
        for candidate in self.root.glob(f".{key}.*.tmp"):
            if now - _newest_mtime(candidate) > STALE_SECONDS:
                shutil.rmtree(candidate, ignore_errors=True)
        for candidate in self.root.glob(f"{key}.*"):
            if candidate.name == current or candidate.suffix == ".corrupt" or not candidate.is_dir():
                continue
            if now - _newest_mtime(candidate) > STALE_SECONDS:
                shutil.rmtree(candidate, ignore_errors=True)


def _newest_mtime(folder: Path) -> float:
    """The folder's own time and its files' (a writer appending to features.npy updates only that)."""
    times = [folder.stat().st_mtime]
    with contextlib.suppress(OSError):
        times.extend(child.stat().st_mtime for child in folder.iterdir())
    return max(times)


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_folder(folder: Path) -> None:
    """The renames in `folder` reach the disk (where the file system allows opening a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
