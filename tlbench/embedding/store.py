"""FeatureStore: extracted features on disk, keyed by everything that determines them.

Extraction is the expensive part of a benchmark; fitting classifiers is cheap and repeated.
Entries are single .npz files written to a temporary name and renamed into place, so a run
killed mid-write leaves no file that a later run would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the meaning of stored features changes
STALE_SECONDS = 3600


@dataclass
class FeatureSet:
    """Features of one split, rows ordered by dataset index."""

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    indices: np.ndarray  # (N,) int64 dataset indices
    skipped: list[int] = field(default_factory=list)  # dataset indices that could not be decoded
    layout: list[tuple[str, int]] = field(default_factory=list)  # (tap, dimension) in column order

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def cache_key(**parts: Any) -> str:
    """A stable digest of the parts (JSON with sorted keys); any change gives another key."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def load(self, key: str) -> FeatureSet | None:
        """The stored FeatureSet, or None when absent or unreadable (then it is set aside)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return FeatureSet(
                    features=data["features"],
                    labels=data["labels"],
                    indices=data["indices"],
                    skipped=[int(i) for i in data["skipped"]],
                    layout=[(str(n), int(d)) for n, d in meta["layout"]],
                )
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            aside = path.with_suffix(".corrupt")
            log.warning("feature cache entry %s is unreadable (%s); moved to %s and re-extracting", path, exc, aside)
            os.replace(path, aside)
            return None

    def save(self, key: str, features: FeatureSet, meta: dict[str, Any]) -> Path:
        """Write atomically: temporary file in the same folder, fsync, then rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries(key)
        path = self.path(key)
        meta = {**meta, "layout": features.layout, "format": FORMAT_VERSION}
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    features=features.features,
                    labels=features.labels,
                    indices=features.indices,
                    skipped=np.asarray(features.skipped, dtype=np.int64),
                    meta=np.asarray(json.dumps(meta, default=str)),
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        (self.root / f"{key}.json").write_text(json.dumps(meta, indent=2, default=str))
        return path

    def _remove_stale_temporaries(self, key: str) -> None:
        """Temporary files of this key left by a killed writer. Young ones may belong to a
        concurrent job writing the same entry, so only those older than STALE_SECONDS go."""
        now = time.time()
        for tmp in self.root.glob(f".{key}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_SECONDS:
                    tmp.unlink()
