"""FeatureStore: extracted features on disk, keyed by everything that determines them.

Extraction is the expensive part of a benchmark; fitting classifiers is cheap and repeated.
An entry is a folder `<key>/` holding `features.npy` (rows ordered by dataset index), `labels.npy`,
`indices.npy`, `skipped.npy` and `meta.json`. A FeatureWriter streams rows into a temporary folder
as the batches come, so an extraction holds one batch in memory whatever the size of the dataset;
the folder is renamed into place when complete, so a run killed mid-write leaves nothing that a
later run would trust. Entries load memory-mapped: a cache hit reads only the rows it touches.
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
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, dim)})
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

    def mark_skipped(self, indices: Any) -> None:
        self._skipped.update(int(i) for i in indices)

    def finish(self, layout: list[tuple[str, int]], meta: dict[str, Any] | None = None) -> FeatureSet:
        """Row count into the header, rows in index order, the small arrays and meta.json, fsynced."""
        if self.dim is None:  # no batch at all: an empty matrix of the layout's width
            self.dim = sum(d for _, d in layout)
            self._handle.write(_npy_header(0, self.dim, self.dtype))
        self._handle.seek(0)
        self._handle.write(_npy_header(self.rows, self.dim, self.dtype))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        indices = np.concatenate(self._indices) if self._indices else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        unique, first = np.unique(indices, return_index=True)
        if len(unique) != len(indices) or (first != np.arange(len(first))).any():
            self._reorder(first)
            indices, labels = unique, labels[first]
        np.save(self.folder / "labels.npy", labels)
        np.save(self.folder / "indices.npy", indices)
        np.save(self.folder / "skipped.npy", np.asarray(sorted(self._skipped - set(indices.tolist())), np.int64))
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
        (self.folder / "meta.json").write_text(json.dumps(record, indent=2, default=str))
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
            handle.flush()
            os.fsync(handle.fileno())
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
    )


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> FeatureSet | None:
        """The stored FeatureSet, or None when absent or unreadable (then it is set aside)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return read_entry(path)
        except (OSError, EOFError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            aside = path.with_name(f"{key}.corrupt")
            log.warning("feature cache entry %s is unreadable (%s); moved to %s and re-extracting", path, exc, aside)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            return None

    def writer(self, key: str, dtype: Any = np.float32) -> FeatureWriter:
        """A writer into a temporary folder beside the entry; `commit(key, writer, ...)` completes it."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries(key)
        return FeatureWriter(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.root), dtype)

    def commit(
        self, key: str, writer: FeatureWriter, layout: list[tuple[str, int]], meta: dict[str, Any]
    ) -> FeatureSet:
        """Finish the writer and rename its folder into place, replacing an older entry of the key
        (a split re-extracted because skipped images decode again; a concurrent job's copy of the
        same features). The old folder is renamed away first and removed after: readers that
        mapped it keep their pages, and a reader in between sees a miss, never a mixed entry."""
        try:
            writer.finish(layout, meta)
            path = self.path(key)
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".old", dir=self.root))
                os.replace(path, old / key)
            try:
                os.replace(writer.folder, path)
            except OSError:  # another job put its entry there in between: keep that one
                shutil.rmtree(writer.folder, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return read_entry(path)
        except BaseException:
            writer.abort()
            raise

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

    def _remove_stale_temporaries(self, key: str) -> None:
        """Temporary folders of this key left by a killed writer. Young ones may belong to a
        concurrent job writing the same entry, so only those older than STALE_SECONDS go."""
        now = time.time()
        for tmp in [*self.root.glob(f".{key}.*.tmp"), *self.root.glob(f".{key}.*.old")]:
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
