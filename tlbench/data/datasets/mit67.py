"""MIT Indoor 67 (Quattoni & Torralba 2009, "MIT ISR"): 67 indoor scene classes, official 5,360/1,340 split.

The split lists `TrainImages.txt` / `TestImages.txt` (separate downloads) hold one `<class>/<file>` path per
line, relative to `Images/`, with no label column: the label is the first path component. Paths contain
spaces, apostrophes and `.jpg.jpg`; the lists end without a newline. `*_gif.jpg` files hold GIF data (the
decoder reads the format from the content). A list entry whose file differs only in case from the file on
disk is matched case-insensitively (Doersch's `preprocessindoor67.m` does the same).

Classes: the 67 folder names, sorted (as they appear in the lists: lower case with `_`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlbench.data.layout import missing_data_error, read_lines, require_paths
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

NAME = "mit67"
LISTS = {"train": "TrainImages.txt", "test": "TestImages.txt"}

LAYOUT = """ROOT/
  TrainImages.txt             5,360 lines '<class>/<file>' (relative to Images/)
  TestImages.txt              1,340 lines
  Images/<class>/<file>.jpg   67 class folders (from indoorCVPR_09.tar)"""

INFO = DatasetInfo(
    title="MIT Indoor 67",
    num_classes=67,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 5360, "test": 1340},
    resources=(
        Resource(
            "http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar",
            "indoorCVPR_09.tar",
            sha1="0b252516e746ba428b96af408d2e8162d9b08ac5",  # as recorded by a public loader; unverified here
        ),
        Resource("http://web.mit.edu/torralba/www/TrainImages.txt", "TrainImages.txt", extract=False),
        Resource("http://web.mit.edu/torralba/www/TestImages.txt", "TestImages.txt", extract=False),
    ),
    instructions=(
        "from https://web.mit.edu/torralba/www/indoor.html download indoorCVPR_09.tar (extract it into ROOT, "
        "giving ROOT/Images/), TrainImages.txt and TestImages.txt (into ROOT)"
    ),
)


def _find_root(root: str | None) -> Path:
    """ROOT holds Images/ and the two lists; ROOT may also be Images/ itself, with the lists beside it."""
    if not root:
        raise DatasetError(f"dataset={NAME} needs dataset.root=PATH (the folder holding Images/ and the lists)")
    base = Path(root).expanduser()
    for candidate in (base, base / "indoorCVPR_09", base / "mit67"):
        if (candidate / "Images").is_dir():
            return candidate
    if base.name == "Images" and base.is_dir() and any((base.parent / f).is_file() for f in LISTS.values()):
        return base.parent
    raise missing_data_error(NAME, base, ["Images/", *LISTS.values()])


def _match_files(images: Path, entries: list[str]) -> tuple[list[str], list[str]]:
    """The on-disk relative path of each list entry (exact name first, then ignoring case), and the
    entries that have no file. One directory listing per class folder: no image is opened."""
    listings: dict[str, tuple[set[str], dict[str, str]]] = {}
    found: list[str] = []
    missing: list[str] = []
    for entry in entries:
        folder, _, filename = entry.rpartition("/")
        if folder not in listings:
            try:
                names = set(os.listdir(images / folder)) if folder else set()
            except OSError:
                names = set()
            listings[folder] = (names, {n.lower(): n for n in names})
        names, lower = listings[folder]
        if filename in names:
            found.append(entry)
        elif filename.lower() in lower:
            found.append(f"{folder}/{lower[filename.lower()]}")
        else:
            missing.append(f"Images/{entry}")
    return found, missing


@register_dataset(NAME, INFO)
def mit67(root: str | None = None) -> DatasetSplits:
    """The official split from TrainImages.txt / TestImages.txt (no validation split: use dataset.val_fraction)."""
    base = _find_root(root)
    require_paths(NAME, base, list(LISTS.values()))
    entries = {split: read_lines(base / filename) for split, filename in LISTS.items()}
    for split, lines in entries.items():
        bad = [line for line in lines if "/" not in line.strip("/")]
        if bad:
            raise DatasetError(
                f"{NAME}: {base / LISTS[split]} should list '<class>/<file>' paths; these lines are not: {bad[:5]}"
            )
    overlap = sorted(set(entries["train"]) & set(entries["test"]))
    if overlap:
        raise DatasetError(f"{NAME}: {len(overlap)} images are in both split lists, e.g. {overlap[:3]}")

    classes = sorted({line.split("/", 1)[0] for lines in entries.values() for line in lines})
    index = {name: i for i, name in enumerate(classes)}
    images = base / "Images"
    matched = {split: _match_files(images, lines) for split, lines in entries.items()}
    missing = [path for _, absent in matched.values() for path in absent]
    if missing:
        raise missing_data_error(NAME, base, missing)
    splits = {
        split: FileSamples(
            images, matched[split][0], np.array([index[line.split("/", 1)[0]] for line in lines], dtype=np.int64)
        )
        for split, lines in entries.items()
    }
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
