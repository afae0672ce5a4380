"""Split contents without transforms: labels plus a way to load one image lazily."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tlbench.data.images import load_rgb


class ImageSamples:
    """One split: integer labels and `load(i)`; nothing is decoded until asked for."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A human-readable name for sample `index` (its file path where there is one)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A digest of everything that defines this split's content, for the feature cache key."""
        raise NotImplementedError


class ArraySamples(ImageSamples):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, 3)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str) -> None:
        if images.dtype != np.uint8:
            raise TypeError(f"ArraySamples needs uint8 images, got {images.dtype}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.images.tobytes())
        digest.update(self.labels.tobytes())
        return digest.hexdigest()


@dataclass
class FileSamples(ImageSamples):
    """Image files under `root`, listed by relative path, decoded on demand."""

    root: Path
    relpaths: Sequence[str]
    labels: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.relpaths) != len(self.labels):
            raise ValueError("relpaths and labels differ in length")

    def path(self, index: int) -> Path:
        return self.root / self.relpaths[index]

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.path(index))

    def describe(self, index: int) -> str:
        return str(self.path(index))

    def fingerprint(self) -> str:
        # Paths, labels, sizes and modification times: cheap to read for 100k files (no image
        # is opened), and an edited or replaced file changes at least one of them.
        digest = hashlib.sha256(str(self.root.resolve()).encode())
        for relpath, label in zip(self.relpaths, self.labels):
            try:
                stat = os.stat(self.root / relpath)
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            digest.update(f"{relpath}\0{label}\0{size}\0{mtime}\n".encode())
        return digest.hexdigest()


class SubsetSamples(ImageSamples):
    """A subset of another split (for a seeded validation holdout)."""

    def __init__(self, base: ImageSamples, indices: np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = base.labels[self.indices]

    def load(self, index: int) -> Image.Image:
        return self.base.load(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.base.describe(int(self.indices[index]))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.base.fingerprint().encode())
        digest.update(self.indices.tobytes())
        return digest.hexdigest()
