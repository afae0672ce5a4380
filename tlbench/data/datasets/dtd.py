"""DTD (Describable Textures, "textures"): `dtd/images/<class>/<class>_NNNN.jpg` with ten official
train/val/test folds in `dtd/labels/{train,val,test}{1..10}.txt` (one `<class>/<file>.jpg` per line).

Matches `torchvision.datasets.DTD(split, partition=split_id)`: the file of a line is
`images/<line>`, its class is the part before the "/", classes are sorted by name (the 47 DTD
classes in every fold), labels index that list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import ConfigError, DatasetError

NUM_FOLDS = 10

LAYOUT = """ROOT/                       (the folder holding dtd/, or dtd/ itself; torchvision's ROOT/dtd/dtd/ works too)
  dtd/images/<class>/<class>_NNNN.jpg             (47 classes x 120 images)
  dtd/labels/train1.txt val1.txt test1.txt ... train10.txt val10.txt test10.txt"""

INFO = DatasetInfo(
    title="Describable Textures Dataset (DTD)",
    num_classes=47,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 1880, "val": 1880, "test": 1880},
    resources=(
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            "dtd-r1.0.1.tar.gz",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
        ),
    ),
    torchvision="DTD",
)


def split_files(split_id: int) -> dict[str, str]:
    return {split: f"labels/{split}{split_id}.txt" for split in ("train", "val", "test")}


def _parse_list(path: Path) -> list[tuple[str, str]]:
    """(relative path under images/, class) per line."""
    entries = []
    for number, line in enumerate(read_lines(path), 1):
        relpath = line.strip()
        cls, sep, name = relpath.partition("/")
        if not sep or not cls or not name or "/" in name:
            raise DatasetError(f"{path}, line {number}: expected '<class>/<file>.jpg', got {line!r}")
        entries.append((relpath, cls))
    return entries


@register_dataset("dtd", INFO)
def dtd(root: str | None = None, split_id: int = 1, trainval: bool = False) -> DatasetSplits:
    """Fold `split_id` (1..10) of the official train/val/test. `trainval=True` trains on train + val
    of the fold (3,760 images, the Kornblith et al. protocol) and has no val split."""
    if isinstance(split_id, bool) or not isinstance(split_id, int) or not 1 <= split_id <= NUM_FOLDS:
        raise ConfigError(f"dataset=dtd: dataset.split_id must be an integer in 1..{NUM_FOLDS}, got {split_id!r}")
    base = resolve_root("dtd", root, "labels", subdirs=("dtd", "dtd/dtd"))
    files = split_files(split_id)
    require_paths("dtd", base, ["images", *files.values()])

    entries = {split: _parse_list(base / relpath) for split, relpath in files.items()}
    classes = sorted({cls for items in entries.values() for _, cls in items})
    index = {cls: i for i, cls in enumerate(classes)}
    if trainval:
        entries = {"train": entries["train"] + entries["val"], "test": entries["test"]}

    splits = {}
    for split, items in entries.items():
        relpaths = [f"images/{relpath}" for relpath, _ in items]
        splits[split] = FileSamples(base, relpaths, np.array([index[cls] for _, cls in items], dtype=np.int64))
    return DatasetSplits(name="dtd", classes=classes, splits=splits, root=str(base))
