"""Generated splits written once to a split file and reused, so that a seeded split is identical on
every machine, in every process and with every library version that reads it later.

A split file is plain text: `#` comment lines (what generated it), then one `<split>\\t<relpath>` line per
image, splits in a fixed order and images in listing order. It lives next to the data
(`ROOT/tlbench_splits/<file>`) when ROOT is writable, else in a cache folder
(`$TLBENCH_SPLIT_DIR`, else `$XDG_CACHE_HOME/tlbench/splits`, else `~/.cache/tlbench/splits`) under a name
that includes a digest of the image listing, so two copies of a dataset share it and different listings
never collide. An existing file is always reused; one that names images the dataset lacks is an error
(delete it to regenerate).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tlbench.errors import DatasetError

SPLIT_FOLDER = "tlbench_splits"


def listing_digest(relpaths: Sequence[str], labels: Sequence[int]) -> str:
    """md5 of the (relpath, label) listing a split was drawn from."""
    digest = hashlib.md5()
    for relpath, label in zip(relpaths, labels):
        digest.update(f"{relpath}\t{int(label)}\n".encode())
    return digest.hexdigest()


def cache_folder() -> Path:
    explicit = os.environ.get("TLBENCH_SPLIT_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tlbench" / "splits"


def candidate_paths(root: Path, filename: str, digest: str) -> tuple[Path, Path]:
    """(next to the data, in the cache folder) for a split file called `filename`."""
    stem, dot, ext = filename.rpartition(".")
    cached = f"{stem}-{digest[:12]}{dot}{ext}" if dot else f"{filename}-{digest[:12]}"
    return root / SPLIT_FOLDER / filename, cache_folder() / cached


def format_split_file(header: Sequence[str], relpaths: Sequence[str], parts: dict[str, np.ndarray]) -> str:
    lines = [f"# {h}" for h in header]
    for split, indices in parts.items():
        lines.extend(f"{split}\t{relpaths[i]}" for i in np.sort(np.asarray(indices, dtype=np.int64)))
    return "\n".join(lines) + "\n"


def parse_split_file(path: Path, relpaths: Sequence[str], split_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Indices into `relpaths` of each split listed in the file at `path`."""
    position = {p: i for i, p in enumerate(relpaths)}
    parts: dict[str, list[int]] = {s: [] for s in split_names}
    unknown: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"split file {path} cannot be read ({exc}); delete the file to regenerate it") from exc
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        split, tab, relpath = line.partition("\t")
        if not tab or split not in parts:
            raise DatasetError(f"split file {path}: cannot read line {line!r}; delete the file to regenerate it")
        if relpath not in position:
            unknown.append(relpath)
            continue
        parts[split].append(position[relpath])
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        raise DatasetError(
            f"split file {path} lists images that are not in the dataset: {shown}. The data changed since the "
            "split was written; restore the missing files, or delete the split file to draw a new split."
        )
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in parts.items()}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.replace(tmp, path)  # concurrent writers write the same bytes; the last rename wins
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_or_create_split(
    root: Path,
    filename: str,
    relpaths: Sequence[str],
    labels: Sequence[int],
    generate: Callable[[], dict[str, np.ndarray]],
    header: Sequence[str],
    split_names: Sequence[str] = ("train", "test"),
) -> tuple[dict[str, np.ndarray], Path]:
    """The split stored in `filename` (next to the data or in the cache), or a new one from `generate()`
    (indices into `relpaths` keyed by `split_names`), written there first. Returns the indices into
    `relpaths` per split, read back from the file, and the split file's path."""
    digest = listing_digest(relpaths, labels)
    beside, cached = candidate_paths(Path(root), filename, digest)
    for path in (beside, cached):
        if path.is_file():  # an existing split file always wins
            return parse_split_file(path, relpaths, split_names), path
    parts = generate()
    text = format_split_file([*header, f"listing md5: {digest}"], relpaths, {s: parts[s] for s in split_names})
    for path in (beside, cached):
        try:
            _write_atomically(path, text)
        except OSError:
            continue
        return parse_split_file(path, relpaths, split_names), path
    raise DatasetError(
        f"cannot write the split file {filename} next to the data ({beside.parent}) nor in the cache "
        f"({cached.parent}); set TLBENCH_SPLIT_DIR to a writable folder"
    )
