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

meta.json holds a checksum of each of the four arrays' files ("checksums"), and `FeatureStore.load`
verifies them, streaming each file through the hash in small pieces: an entry whose bytes changed
since it was written (a bad disk, a stray write, a copy gone wrong) is set aside like a truncated
one, logged, and extracted again, instead of silently giving other numbers. Entries written before
checksums existed still load (unverified, said once at INFO). A disk or quota that fills up while
writing raises StorageFullError naming the folder, after removing the partial entry.
"""

from __future__ import annotations

import contextlib
import errno
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

from tlbench.errors import StorageFullError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the meaning or layout of stored features changes
STALE_SECONDS = 3600
HEADER_BYTES = 128  # a fixed-size .npy header, rewritten in place once the row count is known
CHUNK_BYTES = 64 * 2**20  # rows are copied and reordered in pieces of about this size
# Checksums in meta.json. sha256 (OpenSSL, SHA-NI where the CPU has it) hashed 1 GiB in memory in
# 0.75 s on the development machine, blake2b in 2.2 s. Verifying an entry on load reads it whole
# once: about 0.8 s per GiB from the page cache, the disk's read rate when cold.
CHECKSUM = "sha256"
READ_BYTES = 2**20  # files are hashed through a buffer of this size: memory stays flat
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # a full disk, an exhausted quota
_UNVERIFIED: set[str] = set()  # entries without checksums already reported (once per process)


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


def row_slices(rows: int, dim: int, itemsize: int = 8) -> Iterator[slice]:
    """Row ranges (slices, not data) of about CHUNK_BYTES each, counted at `itemsize` bytes per value."""
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
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.dim: int | None = None
        self._labels: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._skipped: set[int] = set()
        self._nonfinite: np.ndarray | None = None  # per column: any NaN/inf so far
        self._hash = hashlib.new(CHECKSUM)  # of the rows as written; the header is added at the end
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.folder / "features.npy", "wb")  # noqa: SIM115 (closed in finish/abort)
        except OSError as exc:
            if exc.errno in _FULL:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise _storage_full(self.folder, 0, exc) from exc
            raise

    def append(self, features: Any, labels: Any, indices: Any, ok: Any = None) -> None:
        features, labels, indices = np.asarray(features), np.asarray(labels), np.asarray(indices)
        if features.ndim != 2 or len(features) != len(labels) or len(labels) != len(indices):
            raise ValueError(f"a batch needs (B, D) features and B labels and indices, got {features.shape}")
        if self.dim is None:
            self.dim = int(features.shape[1])
            with self._full_disk():
                self._handle.write(_npy_header(0, self.dim, self.dtype))
        elif features.shape[1] != self.dim:
            raise ValueError(f"rows of {features.shape[1]} features after rows of {self.dim}")
        keep = np.ones(len(labels), bool) if ok is None else np.asarray(ok, bool)
        self.mark_skipped(indices[~keep])
        rows = np.ascontiguousarray(features[keep], dtype=self.dtype)
        if self.dtype.kind == "f":  # counted now, so a cache hit need not read every value again
            bad = ~np.isfinite(rows).all(axis=0)
            self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        with self._full_disk():
            self._handle.write(rows.tobytes())
        self._hash.update(rows)
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
        """Row count into the header, rows in index order, the small arrays and meta.json (with the
        files' checksums), fsynced. A full disk removes the folder and raises StorageFullError."""
        with self._full_disk():
            self._finish(layout, meta)
        return read_entry(self.folder)

    def _finish(self, layout: list[tuple[str, int]], meta: dict[str, Any] | None) -> None:
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
            features_hash = self._reorder(first)
            indices, labels = unique, labels[first]
        else:
            features_hash = self._hash.copy()
            features_hash.update(_npy_header(self.rows, self.dim, self.dtype))
        checksums = {"features.npy": features_hash.hexdigest()}
        skipped = np.setdiff1d(np.fromiter(self._skipped, np.int64, len(self._skipped)), indices)
        for name, array in (("labels", labels), ("indices", indices), ("skipped", skipped)):
            with open(self.folder / f"{name}.npy", "wb") as handle:
                np.save(handle, array)
                _sync(handle)
            checksums[f"{name}.npy"] = _file_checksum(self.folder / f"{name}.npy", CHECKSUM)
        record = {
            **(meta or {}),
            "layout": layout,
            "format": FORMAT_VERSION,
            "rows": len(indices),
            "dim": self.dim,
            "dtype": self.dtype.name,
            "bytes_per_feature": self.dtype.itemsize,
            "nonfinite_columns": int(self._nonfinite.sum()) if self._nonfinite is not None else 0,
            # features.npy is hashed data first, then its header (whose row count comes last)
            "checksums": {"algorithm": CHECKSUM, "header_bytes": HEADER_BYTES, "files": checksums},
        }
        with open(self.folder / "meta.json", "w") as handle:  # last: its presence marks a complete folder
            handle.write(json.dumps(record, indent=2, default=str))
            _sync(handle)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the flush of buffered rows too
            self._handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def _full_disk(self) -> Iterator[None]:
        """A full disk or quota (ENOSPC, EDQUOT): the folder removed, then StorageFullError."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            written = _folder_bytes(self.folder)
            self.abort()
            raise _storage_full(self.folder, written, exc) from exc

    def _reorder(self, order: np.ndarray) -> Any:
        """Rewrite features.npy with rows `order` (the first occurrence of each index, by index);
        the checksum of the new file (rows, then header) is computed on the way."""
        source = np.load(self.folder / "features.npy", mmap_mode="r")
        target = self.folder / "features.sorted"
        digest = hashlib.new(CHECKSUM)
        header = _npy_header(len(order), self.dim or 0, self.dtype)
        with open(target, "wb") as handle:
            handle.write(header)
            for part in row_slices(len(order), self.dim or 1, self.dtype.itemsize):
                rows = np.ascontiguousarray(source[order[part]])
                handle.write(rows.tobytes())
                digest.update(rows)
            _sync(handle)
        del source
        os.replace(target, self.folder / "features.npy")
        digest.update(header)
        return digest


class ChecksumMismatch(ValueError):
    """A file of an entry whose content is not what was written (it is set aside like a truncated one)."""


def read_entry(folder: str | Path, verify: bool = False) -> FeatureSet:
    """The FeatureSet of a complete entry folder, features memory-mapped read-only. Raises on any
    inconsistency (a missing file, a row count that disagrees) and, with `verify`, on a file whose
    checksum differs from the one in meta.json (ChecksumMismatch); that reads every file once."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    features = np.load(folder / "features.npy", mmap_mode="r")
    labels, indices = np.load(folder / "labels.npy"), np.load(folder / "indices.npy")
    expected = (int(meta["rows"]), int(meta["dim"]))
    if features.shape != expected or len(labels) != expected[0] or len(indices) != expected[0]:
        raise ValueError(f"entry {folder} has {features.shape} features for {expected}")
    if "dtype" in meta and features.dtype.name != meta["dtype"]:
        raise ValueError(f"entry {folder} has {features.dtype.name} features for {meta['dtype']}")
    if verify:
        verify_entry(folder, meta)
    return FeatureSet(
        features=features,
        labels=labels,
        indices=indices,
        skipped=[int(i) for i in np.load(folder / "skipped.npy")],
        layout=[(str(n), int(d)) for n, d in meta["layout"]],
        nonfinite_columns=meta.get("nonfinite_columns"),
        entry_id=folder.name,
    )


def verify_entry(folder: Path, meta: dict[str, Any]) -> None:
    """Compare each file's checksum with meta.json's, streaming the files (READ_BYTES at a time).
    An entry written before checksums existed passes, reported once at INFO."""
    recorded = meta.get("checksums")
    if recorded is None:
        if folder.name not in _UNVERIFIED:
            _UNVERIFIED.add(folder.name)
            log.info(
                "feature cache entry %s carries no checksums (written by an older tlbench): used unverified", folder
            )
        return
    algorithm, files = str(recorded["algorithm"]), recorded["files"]
    for name in ("features.npy", "labels.npy", "indices.npy", "skipped.npy"):
        split = int(recorded.get("header_bytes", HEADER_BYTES)) if name == "features.npy" else 0
        actual = _file_checksum(folder / name, algorithm, split)
        if actual != files[name]:
            raise ChecksumMismatch(
                f"{name} does not match its {algorithm} checksum (recorded {files[name][:16]}…, "
                f"read {actual[:16]}…): its content changed after it was written"
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
            return read_entry(folder, verify=True)
        except (OSError, EOFError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            self._set_aside(key, folder, exc)
            return None

    def writer(self, key: str, dtype: Any = np.float32) -> FeatureWriter:
        """A writer into a temporary folder beside the entry; `commit(key, writer, ...)` completes it."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._remove_stale(key)
            folder = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
        except OSError as exc:
            if exc.errno in _FULL:
                raise _storage_full(self.root / key, 0, exc) from exc
            raise
        return FeatureWriter(folder, dtype)

    def commit(
        self, key: str, writer: FeatureWriter, layout: list[tuple[str, int]], meta: dict[str, Any]
    ) -> FeatureSet:
        """Finish the writer, give the folder its final unique name and point the key's link at it
        (an atomic rename of a new link over the old one). The version it replaces stays until it
        is older than STALE_SECONDS. A full disk leaves nothing of this entry behind and raises
        StorageFullError (the current version, if any, stays current)."""
        try:
            writer.finish(layout, meta)
            version = self.root / f"{key}.{uuid.uuid4().hex[:12]}"
            with writer._full_disk():
                os.replace(writer.folder, version)
        except BaseException:
            writer.abort()
            raise
        link = self.root / f".{key}.{version.name}.link"
        try:
            os.symlink(version.name, link)  # relative: the cache folder may be mounted elsewhere
            path = self.path(key)
            if path.is_dir() and not path.is_symlink():  # a plain folder (written by hand): set it aside
                self._set_aside(key, path, "a plain folder where a link was expected")
            os.replace(link, path)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise
            written = _folder_bytes(version)
            with contextlib.suppress(OSError):
                link.unlink()
            shutil.rmtree(version, ignore_errors=True)
            raise _storage_full(version, written, exc) from exc
        _sync_folder(self.root)
        return read_entry(version)

    def save(self, key: str, features: FeatureSet, meta: dict[str, Any]) -> Path:
        """A whole FeatureSet at once (through the same writer)."""
        writer = self.writer(key, features.features.dtype)
        try:
            for part in row_slices(len(features.labels), max(features.dim, 1), features.features.dtype.itemsize):
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


def _file_checksum(path: Path, algorithm: str, split: int = 0) -> str:
    """The hex digest of the file's bytes from `split` to the end, then of its first `split` bytes,
    read through one small buffer (a file of any size, flat memory)."""
    digest = hashlib.new(algorithm)
    buffer = memoryview(bytearray(READ_BYTES))
    with open(path, "rb", buffering=0) as handle:
        handle.seek(split)
        while count := handle.readinto(buffer):
            digest.update(buffer[:count])
        handle.seek(0)
        left = split
        while left > 0 and (count := handle.readinto(buffer[: min(left, READ_BYTES)])):
            digest.update(buffer[:count])
            left -= count
    return digest.hexdigest()


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files in `folder` (what a writer had put on disk), 0 where it cannot be read."""
    total = 0
    with contextlib.suppress(OSError):
        for child in folder.iterdir():
            with contextlib.suppress(OSError):
                total += child.stat().st_size
    return total


def _storage_full(folder: Path, written: int, exc: OSError) -> StorageFullError:
    """The error for a disk or quota that filled up while `folder` (an entry of a store) was written."""
    where = folder.parent
    free = ""
    with contextlib.suppress(OSError):
        free = f"; {_size(shutil.disk_usage(where).free)} free there now"
    reason = "the disk quota is exhausted" if exc.errno != errno.ENOSPC else "no space is left on the device"
    return StorageFullError(
        f"{reason} in {where} while writing extracted features ({exc.strerror or exc}): the entry had "
        f"written {_size(written)} so far{free}; the partial entry was removed. Free space there, or "
        f"set paths.cache_dir=<a folder on another disk> (or TLBENCH_CACHE_DIR), or run with cache=false "
        f"(features then stream to the run directory, under paths.output_dir, and are removed after the run)"
    )


def _size(count: int) -> str:
    """A byte count for a message: 812 B, 3.4 MiB, 1.2 TiB."""
    scaled, units = float(count), ["B", "KiB", "MiB", "GiB", "TiB"]
    while scaled >= 1024 and len(units) > 1:
        scaled, units = scaled / 1024, units[1:]
    return f"{count} B" if units[0] == "B" else f"{scaled:.1f} {units[0]}"


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
