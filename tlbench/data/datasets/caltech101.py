"""Caltech101: 101 object classes (plus BACKGROUND_Google), no official split.

Protocol (the classic one, as in HPAI-BSC's FNE/tl-tradeoff work): per class, `train_per_class_split`
(30) images drawn at random for training and up to `test_per_class` (50) of the rest for testing; the
draw is seeded by `split_id` (0..4 conventionally) and written to a split file
(`ROOT/tlbench_splits/caltech101_split<id>.txt`, or the cache folder when ROOT is read-only; see
tlbench/data/stored_splits.py), which is reused from then on, so every process and machine sees the same
split. Metric: mean per-class accuracy.

Classes: the sorted folder names of 101_ObjectCategories without BACKGROUND_Google, exactly as
torchvision.datasets.Caltech101 (which lists `image_NNNN.jpg` 1..n per folder; we list the files).
`include_background=True` keeps BACKGROUND_Google as a class (TFDS/TLlib style, 102 classes).
Faces and Faces_easy are the same photos at different crops; both are kept, as in torchvision.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlbench.data.images import is_image_file
from tlbench.data.layout import check_int, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset, register_listing
from tlbench.data.samples import FileSamples
from tlbench.data.stored_splits import load_or_create_split
from tlbench.errors import DatasetError

NAME = "caltech101"
IMAGES = "101_ObjectCategories"
BACKGROUND = "BACKGROUND_Google"

LAYOUT = f"""ROOT/  (or ROOT/caltech101/, ROOT/caltech-101/)
  {IMAGES}/
    Faces/image_0001.jpg ... image_0435.jpg
    Faces_easy/ Leopards/ Motorbikes/ accordion/ airplanes/ ... yin_yang/   (101 class folders)
    {BACKGROUND}/   (not a class unless dataset.include_background=true)
  Annotations/   (optional, unused)
  tlbench_splits/caltech101_split<id>.txt   (written on first use when ROOT is writable)
caltech-101.zip holds 101_ObjectCategories.tar.gz: extract that inner archive too."""

INFO = DatasetInfo(
    title="Caltech101",
    num_classes=101,
    metric="mean_per_class",
    layout=LAYOUT,
    # 30 per class for training; min(50, rest) per class for testing (HPAI-BSC split sizes).
    split_sizes={"train": 3030, "test": 2945},
    resources=(
        Resource(
            url="https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
            filename="caltech-101.zip",
            md5="3138e1922a9193bfa496528edbbc45d0",
            nested=("caltech-101/101_ObjectCategories.tar.gz",),
        ),
    ),
    instructions=(
        "download caltech-101.zip from https://data.caltech.edu/records/mzrjq-6wc02, unzip it into ROOT, then "
        "extract caltech-101/101_ObjectCategories.tar.gz in the same folder (tar xzf) so that "
        "ROOT/caltech-101/101_ObjectCategories/<class>/image_NNNN.jpg exists"
    ),
    torchvision="Caltech101",
)


def _folders(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def list_images(root: Path, include_background: bool = False) -> tuple[list[str], list[str], np.ndarray]:
    """(classes, relpaths, labels) of the whole dataset, relative to `root`, classes and files sorted."""
    folders = _folders(root / IMAGES)
    classes = [c for c in folders if include_background or c != BACKGROUND]
    relpaths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(root / IMAGES / name) if is_image_file(f))
        relpaths.extend(f"{IMAGES}/{name}/{f}" for f in files)
        labels.extend([label] * len(files))
    return classes, relpaths, np.array(labels, dtype=np.int64)


def draw_split(labels: np.ndarray, split_id: int, train_per_class: int, test_per_class: int | None) -> dict:
    """Per class (in label order) a permutation from default_rng(split_id): the first `train_per_class`
    train, the next `test_per_class` (all if None) test."""
    rng = np.random.default_rng(split_id)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in range(int(labels.max()) + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        train.append(members[:train_per_class])
        rest = members[train_per_class:]
        test.append(rest if test_per_class is None else rest[:test_per_class])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def split_filename(split_id: int, train_per_class: int, test_per_class: int | None, background: bool) -> str:
    name = f"{NAME}_split{split_id}"
    if (train_per_class, test_per_class, background) != (30, 50, False):
        test = "all" if test_per_class is None else str(test_per_class)
        name += f"_train{train_per_class}_test{test}" + ("_bg" if background else "")
    return name + ".txt"


def _resolve(root: str | None) -> Path:
    try:
        return resolve_root(NAME, root, IMAGES, subdirs=("caltech101", "caltech-101"))
    except DatasetError as exc:
        base = Path(root).expanduser() if root else None
        inner = [base / d / f"{IMAGES}.tar.gz" for d in ("", "caltech101", "caltech-101")] if base else []
        found = [p for p in inner if p.is_file()]
        if found:
            raise DatasetError(
                f"{exc}\n{found[0]} is still packed: extract it there (tar xzf {found[0].name}) and try again."
            ) from exc
        raise


@register_listing(NAME)
def whole_archive(root: str | None) -> FileSamples:
    """Every image of every class, the background class included (for `tlbench-data verify`)."""
    base = _resolve(root)
    _, relpaths, labels = list_images(base, include_background=True)
    return FileSamples(base, relpaths, labels)


@register_dataset(NAME, INFO)
def caltech101(
    root: str | None = None,
    split_id: int = 0,
    train_per_class_split: int = 30,
    test_per_class: int | None = 50,
    include_background: bool = False,
) -> DatasetSplits:
    check_int("dataset.split_id", split_id, minimum=0)
    check_int("dataset.train_per_class_split", train_per_class_split, minimum=1)
    if test_per_class is not None:
        check_int("dataset.test_per_class", test_per_class, minimum=1)
    base = _resolve(root)
    classes, relpaths, labels = list_images(base, include_background)
    if not classes:
        raise DatasetError(f"caltech101: {base / IMAGES} has no class folders.\nExpected layout:\n{LAYOUT}")
    counts = np.bincount(labels, minlength=len(classes))
    small = [f"{c} ({n})" for c, n in zip(classes, counts) if n <= train_per_class_split]
    if small:
        raise DatasetError(
            f"caltech101: these classes have no more than {train_per_class_split} images, so none would be left "
            f"for testing: {', '.join(small)}. Is {base / IMAGES} complete? (the smallest real class, "
            "inline_skate, has 31)"
        )
    filename = split_filename(split_id, train_per_class_split, test_per_class, include_background)
    header = [
        f"tlbench split file: {NAME} split_id={split_id}: per class {train_per_class_split} train, "
        f"{'all the' if test_per_class is None else f'up to {test_per_class}'} rest test; "
        f"background {'included' if include_background else 'excluded'}",
        f"drawn with numpy.random.default_rng({split_id}); do not edit (delete to redraw)",
    ]
    parts, _ = load_or_create_split(
        base,
        filename,
        relpaths,
        labels,
        lambda: draw_split(labels, split_id, train_per_class_split, test_per_class),
        header,
    )
    splits = {
        split: FileSamples(base, [relpaths[i] for i in indices], labels[indices]) for split, indices in parts.items()
    }
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
