"""Shared pieces of the dataset loaders: finding the root, requiring files with an actionable
error, reading split lists and .mat files the same way everywhere."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.data.registry import DatasetSplits, dataset_info
from tlbench.data.samples import FileSamples
from tlbench.errors import ConfigError, DatasetError


def how_to_get(name: str, root: str | Path) -> str:
    info = dataset_info(name)
    if info is not None and info.resources:
        return f"download it with: tlbench-data download {name} --root {root}"
    if info is not None and info.instructions:
        return info.instructions
    return "see the dataset's home page"


def missing_data_error(
    name: str, root: str | Path, missing: Sequence[str], user_root: str | Path | None = None
) -> DatasetError:
    """The error for a missing or partial root: dataset, expected layout, missing files, the fix."""
    info = dataset_info(name)
    title = f"{info.title} ({name})" if info else name
    shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
    layout = f"\nExpected layout under ROOT:\n{info.layout}" if info else ""
    command_root = user_root or root  # the folder the user named, which download and verify expect
    return DatasetError(
        f"{title}: {root} is missing {shown}.{layout}\nTo get the data, {how_to_get(name, command_root)}; "
        f"then check it with: tlbench-data verify {name} --root {command_root}"
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


def require_listed_files(splits: DatasetSplits, user_root: str | None = None) -> None:
    """Every file a split lists exists: a partly extracted archive is an error naming the missing
    files, not thousands of "unreadable image" skips in a run that then reports partial results."""
    base = Path(splits.root) if splits.root else None
    missing: list[str] = []
    for samples in splits.splits.values():
        if isinstance(samples, FileSamples):
            absent = missing_files(samples.root, samples.relpaths)
            missing += [os.path.relpath(samples.root / p, base) if base else str(samples.root / p) for p in absent]
    if missing:
        raise missing_data_error(splits.name, base or "ROOT", missing, user_root)


def check_int(what: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer config value within bounds, or a ConfigError naming it (`dataset.split_id=abc`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
        raise ConfigError(f"{what} must lie in {bounds}, got {value}")
    return value


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
