"""Shared pieces of the dataset loaders: finding the root, requiring files with an actionable
error, reading split lists and .mat files the same way everywhere."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.data.registry import dataset_info
from tlbench.errors import DatasetError


def how_to_get(name: str, root: str | Path) -> str:
    info = dataset_info(name)
    if info is not None and info.resources:
        return f"download it with: tlbench-data download {name} --root {root}"
    if info is not None and info.instructions:
        return info.instructions
    return "see the dataset's home page"


def missing_data_error(name: str, root: str | Path, missing: Sequence[str]) -> DatasetError:
    """The error for a missing or partial root: dataset, expected layout, missing files, the fix."""
    info = dataset_info(name)
    title = f"{info.title} ({name})" if info else name
    shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
    layout = f"\nExpected layout under ROOT:\n{info.layout}" if info else ""
    return DatasetError(
        f"{title}: {root} is missing {shown}.{layout}\nTo get the data, {how_to_get(name, root)}; "
        f"then check it with: tlbench-data verify {name} --root {root}"
    )


def resolve_root(name: str, root: str | Path | None, marker: str, subdirs: Iterable[str] = ()) -> Path:
    """The folder that holds `marker`: ROOT itself, or one of the archive's top-level folders under it
    (users point at either the download folder or the extracted one)."""
    if not root:
        raise DatasetError(f"dataset={name} needs dataset.root=PATH (the folder holding the extracted archives)")
    base = Path(root).expanduser()
    for candidate in (base, *(base / s for s in subdirs)):
        if (candidate / marker).exists():
            return candidate
    raise missing_data_error(name, base, [marker])


def require_paths(name: str, root: Path, relpaths: Iterable[str]) -> None:
    missing = [p for p in relpaths if not (root / p).exists()]
    if missing:
        raise missing_data_error(name, root, missing)


def missing_files(base: Path, relpaths: Iterable[str]) -> list[str]:
    """The `relpaths` (relative to base) that are not on disk, from one directory listing per
    folder: checks a 100k-image list in seconds and opens no image."""
    listings: dict[str, set[str]] = {}
    missing = []
    for relpath in relpaths:
        folder, _, filename = relpath.rpartition("/")
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(base / folder))
            except OSError:
                listings[folder] = set()
        if filename not in listings[folder]:
            missing.append(relpath)
    return missing


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without their line endings (LF or CRLF, final newline or not)."""
    return [
        line.rstrip("\r") for line in path.read_text(encoding="utf-8", errors="replace").split("\n") if line.strip()
    ]


def load_mat(path: Path) -> dict[str, Any]:
    """scipy's loadmat with squeeze_me; use `as_array` on fields, since squeezing turns a one-element
    array into a scalar."""
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError...
        raise DatasetError(f"{path} cannot be read as a MATLAB .mat file: {exc}") from exc


def as_array(value: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(value))
