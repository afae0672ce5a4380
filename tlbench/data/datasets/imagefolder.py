"""Any folder of class sub-folders: explicit train/ test/ (val/) folders, or one folder split by seed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlbench.data.images import is_image_file
from tlbench.data.registry import DatasetInfo, DatasetSplits, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.data.subsets import stratified_split
from tlbench.errors import DatasetError

LAYOUT = """expected either
  ROOT/train/<class>/<image>, ROOT/test/<class>/<image> (and optionally ROOT/val/<class>/<image>)
or
  ROOT/<class>/<image>   (split into train/test by dataset.test_fraction, seeded by dataset.split_seed)"""


def _class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _list_images(folder: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Relative paths (to folder's parent split root) and labels; recursion inside class folders."""
    relpaths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(class_dir, onerror=_unlistable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, folder)
            for filename in sorted(filenames):
                if is_image_file(filename):
                    relpaths.append(os.path.join(rel, filename))
                    labels.append(label)
    return relpaths, labels


def _unlistable(error: OSError) -> None:
    """os.walk skips a folder it cannot list: its images would vanish from the split without a word."""
    raise DatasetError(
        f"imagefolder: cannot list {error.filename} ({error.strerror}); its images would be left out of the "
        "split. Make it readable (chmod -R u+rX) or move it out of the dataset folder."
    ) from error


def _check_every_class_has_images(classes: list[str], labels: np.ndarray, folder: Path) -> None:
    empty = [c for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if n == 0]
    if empty:
        raise DatasetError(f"imagefolder: class folders without images in {folder}: {empty}")


INFO = DatasetInfo(
    title="any folder of class sub-folders",
    num_classes=0,  # whatever the folder holds
    metric="top1",
    layout=LAYOUT,
    instructions="point dataset.root at your own folder",
)


@register_dataset("imagefolder", INFO)
def imagefolder(root: str | None = None, test_fraction: float = 0.2, split_seed: int = 0) -> DatasetSplits:
    if not root:
        raise DatasetError(f"dataset=imagefolder needs dataset.root=PATH; {LAYOUT}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DatasetError(f"imagefolder root {root_path} does not exist or is not a folder; {LAYOUT}")

    if (root_path / "train").is_dir():
        return _explicit_splits(root_path)
    return _seeded_split(root_path, test_fraction, split_seed)


def _explicit_splits(root: Path) -> DatasetSplits:
    classes = _class_folders(root / "train")
    if not classes:
        raise DatasetError(f"imagefolder: {root / 'train'} has no class folders; {LAYOUT}")
    if not (root / "test").is_dir():
        raise DatasetError(f"imagefolder: {root / 'train'} exists but {root / 'test'} does not; {LAYOUT}")
    splits = {}
    for split in ("train", "val", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        unknown = sorted(set(_class_folders(folder)) - set(classes))
        if unknown:
            raise DatasetError(
                f"imagefolder: {folder} has classes that are not in {root / 'train'}: {unknown}. "
                "A classifier cannot predict a class it never saw; add training images for them "
                "or remove those folders."
            )
        relpaths, labels = _list_images(folder, classes)
        if not relpaths:
            raise DatasetError(f"imagefolder: {folder} holds no image files; {LAYOUT}")
        splits[split] = FileSamples(folder, relpaths, np.array(labels))
    _check_every_class_has_images(classes, splits["train"].labels, root / "train")
    return DatasetSplits(name="imagefolder", classes=classes, splits=splits, root=str(root))


def _seeded_split(root: Path, test_fraction: float, split_seed: int) -> DatasetSplits:
    classes = _class_folders(root)
    if not classes:
        raise DatasetError(f"imagefolder: {root} has no class folders; {LAYOUT}")
    relpaths, labels = _list_images(root, classes)
    if not relpaths:
        raise DatasetError(f"imagefolder: no image files under the class folders of {root}; {LAYOUT}")
    labels_arr = np.array(labels)
    _check_every_class_has_images(classes, labels_arr, root)
    train, test = stratified_split(labels_arr, test_fraction, split_seed, what=f"imagefolder {root}")
    return DatasetSplits(
        name="imagefolder",
        root=str(root),
        classes=classes,
        splits={
            "train": FileSamples(root, [relpaths[i] for i in train], labels_arr[train]),
            "test": FileSamples(root, [relpaths[i] for i in test], labels_arr[test]),
        },
    )
