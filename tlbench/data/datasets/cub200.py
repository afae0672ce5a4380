"""CUB-200-2011 (Caltech-UCSD Birds): 200 bird species, official 5,994/5,794 split.

Index files under `CUB_200_2011/`, space-separated with 1-based IDs: `images.txt` (`<image_id> <path under
images/>`), `image_class_labels.txt` (`<image_id> <class_id>`), `train_test_split.txt` (`<image_id>
<is_training_image>`) and `classes.txt` (`<class_id> <NNN.Name>`). The files are joined on the image ID, never
on line order. Labels are `class_id - 1`; class names are those of `classes.txt` (e.g.
`001.Black_footed_Albatross`) in class-ID order. Within a split, images are in image-ID order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

NAME = "cub200"
INDEX_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")

LAYOUT = """ROOT/CUB_200_2011/             (or ROOT itself)
  images.txt                   '<image_id> <class folder>/<file>.jpg', 11,788 lines
  image_class_labels.txt       '<image_id> <class_id>'
  train_test_split.txt         '<image_id> <1 train | 0 test>'
  classes.txt                  '<class_id> <NNN.Name>', 200 lines
  images/<NNN.Name>/<file>.jpg"""

INFO = DatasetInfo(
    title="CUB-200-2011",
    num_classes=200,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 5994, "test": 5794},
    resources=(
        Resource(
            "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
            "CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
        ),
    ),
    instructions=(
        "download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and extract it "
        "into ROOT (giving ROOT/CUB_200_2011/)"
    ),
)


def _id_table(path: Path, what: str) -> dict[int, str]:
    """`<id> <rest>` lines as {id: rest}; the rest may contain spaces."""
    table: dict[int, str] = {}
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{NAME}: {path} line {number} is not '<id> <{what}>': {line!r}")
        key = int(parts[0])
        if key in table:
            raise DatasetError(f"{NAME}: {path} lists id {key} twice")
        table[key] = parts[1].strip()
    return table


def _int_values(table: dict[int, str], path: Path, allowed: set[int] | None = None) -> dict[int, int]:
    try:
        values = {key: int(value) for key, value in table.items()}
    except ValueError as exc:
        raise DatasetError(f"{NAME}: {path} should hold integers after the id ({exc})") from exc
    if allowed is not None:
        bad = sorted(k for k, v in values.items() if v not in allowed)
        if bad:
            raise DatasetError(f"{NAME}: {path} has values outside {sorted(allowed)} for ids {bad[:10]}")
    return values


@register_dataset(NAME, INFO)
def cub200(root: str | None = None) -> DatasetSplits:
    """The official split of train_test_split.txt (no validation split: use dataset.val_fraction)."""
    base = resolve_root(NAME, root, "images.txt", subdirs=("CUB_200_2011",))
    require_paths(NAME, base, [*INDEX_FILES, "images/"])

    paths = _id_table(base / "images.txt", "path")
    labels_path, split_path, classes_path = (base / f for f in INDEX_FILES[1:])
    class_of = _int_values(_id_table(labels_path, "class_id"), labels_path)
    is_train = _int_values(_id_table(split_path, "is_training_image"), split_path, allowed={0, 1})
    class_table = _id_table(classes_path, "class name")

    class_ids = sorted(class_table)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise DatasetError(f"{NAME}: {classes_path} should number classes 1..N contiguously, got {class_ids[:10]}...")
    classes = [class_table[i] for i in class_ids]
    for path, table in ((labels_path, class_of), (split_path, is_train)):
        absent = sorted(set(paths) - set(table))
        if absent:
            raise DatasetError(f"{NAME}: {path} has no line for image ids {absent[:10]} ({len(absent)} in all)")
    unknown = sorted(i for i in paths if not 1 <= class_of[i] <= len(classes))
    if unknown:
        raise DatasetError(f"{NAME}: {labels_path} gives image ids {unknown[:10]} a class id not in {classes_path}")

    ids = sorted(paths)

    splits = {}
    for split, flag in (("train", 1), ("test", 0)):
        chosen = [i for i in ids if is_train[i] == flag]
        splits[split] = FileSamples(
            base / "images", [paths[i] for i in chosen], np.array([class_of[i] - 1 for i in chosen], dtype=np.int64)
        )
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
