"""SUN397 (Xiao et al. 2010): 397 scene classes, 108,754 images, 10 official partitions of 50 train
and 50 test images per class (19,850 / 19,850), selected by `split_id`.

Classes and labels match torchvision.datasets.SUN397: class names are the lines of ClassName.txt
without the leading `/<letter>/` ("abbey", "church/outdoor"), in that file's order, and an image's
label is the class of the folder it sits in. torchvision has no split: it lists every sun_*.jpg;
`all_images()` gives that listing, the partitions are subsets of it. Many files are BMP, PNG or GIF
data under a .jpg name; the decoder reads the format from the content.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlbench.data.layout import missing_data_error, read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset, register_listing
from tlbench.data.samples import FileSamples
from tlbench.errors import ConfigError, DatasetError

NAME = "sun397"
NUM_PARTITIONS = 10
PARTITION_FILES = {"train": "Training_{:02d}.txt", "test": "Testing_{:02d}.txt"}

LAYOUT = """ROOT/SUN397/                        (or ROOT itself), from SUN397.tar.gz
  ClassName.txt                       397 lines /a/abbey ... /c/church/outdoor ...: the class order
  <letter>/<class>[/<sub>]/sun_*.jpg  108,754 images (some are BMP/PNG/GIF data named .jpg)
Partitions.zip, extracted into ROOT/, ROOT/Partitions/, ROOT/SUN397/ or ROOT/SUN397/Partitions/:
  Training_01.txt ... Training_10.txt, Testing_01.txt ... Testing_10.txt   lines /a/abbey/sun_xxx.jpg"""

INFO = DatasetInfo(
    title="SUN397",
    num_classes=397,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 19850, "test": 19850},
    resources=(
        Resource(
            url="http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
            filename="SUN397.tar.gz",
            md5="8ca2778205c41d23104230ba66911c7a",
        ),
        Resource(
            url="https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
            filename="Partitions.zip",
            sha256="e3311ea5f812d4cc6faef194688343d1111f6cd6f70f2c62f393c2b8d6ba1ec9",
        ),
    ),
    torchvision="SUN397",
)


def read_class_folders(path: Path) -> list[str]:
    """ClassName.txt lines `/a/abbey`, `/c/church/outdoor` -> "a/abbey", "c/church/outdoor" (file order):
    each class's folder relative to the SUN397 folder."""
    folders = []
    for line in read_lines(path):
        folder = line.strip().strip("/")
        if folder.count("/") < 1:
            raise DatasetError(f"{path}: expected lines like /a/abbey, got {line!r}")
        folders.append(folder)
    if len(set(folders)) != len(folders):
        raise DatasetError(f"{path} lists a class twice")
    return folders


def class_name(folder: str) -> str:
    """A class's name as torchvision gives it: the folder without its letter, "c/church/outdoor" -> "church/outdoor"."""
    return folder.split("/", 1)[1]


def _partition_dir(base: Path, root: Path, split_id: int) -> Path:
    first = PARTITION_FILES["train"].format(split_id)
    candidates = (base / "Partitions", base, root / "Partitions", root)
    for candidate in candidates:
        if (candidate / first).is_file():
            return candidate
    raise missing_data_error(NAME, root, [f"Partitions/{first} (from Partitions.zip)"])


def _parse_partition(path: Path, class_to_idx: dict[str, int]) -> tuple[list[str], list[int]]:
    relpaths: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(read_lines(path), start=1):
        relpath = line.strip().lstrip("/")  # /a/abbey/sun_xxx.jpg -> a/abbey/sun_xxx.jpg
        parts = relpath.split("/")
        name = "/".join(parts[1:-1])
        if len(parts) < 3 or name not in class_to_idx:
            raise DatasetError(f"{path}:{number}: {line!r} is not an image of a class in ClassName.txt")
        relpaths.append(relpath)
        labels.append(class_to_idx[name])
    return relpaths, labels


def _resolve(root: str | None) -> tuple[Path, list[str]]:
    """The SUN397 folder and the class folders, all present (catches a half-extracted archive)."""
    base = resolve_root(NAME, root, "ClassName.txt", subdirs=("SUN397",))
    folders = read_class_folders(base / "ClassName.txt")
    require_paths(NAME, base, folders)
    return base, folders


@register_dataset(NAME, INFO)
def sun397(root: str | None = None, split_id: int = 1) -> DatasetSplits:
    """Official partition `split_id` (1..10): Training_NN.txt / Testing_NN.txt, 50 images per class each."""
    if isinstance(split_id, bool) or not isinstance(split_id, int) or not 1 <= split_id <= NUM_PARTITIONS:
        raise ConfigError(f"dataset.split_id must be an integer in 1..{NUM_PARTITIONS}, got {split_id!r}")
    base, folders = _resolve(root)
    classes = [class_name(f) for f in folders]
    partitions = _partition_dir(base, Path(root).expanduser(), split_id)
    files = {split: pattern.format(split_id) for split, pattern in PARTITION_FILES.items()}
    require_paths(NAME, partitions, files.values())
    class_to_idx = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split, filename in files.items():
        relpaths, labels = _parse_partition(partitions / filename, class_to_idx)
        splits[split] = FileSamples(base, relpaths, np.array(labels))
    overlap = set(splits["train"].relpaths) & set(splits["test"].relpaths)
    if overlap:
        raise DatasetError(f"{partitions}: {len(overlap)} images are in both {files['train']} and {files['test']}")
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))


def all_images(root: str | None) -> tuple[list[str], list[int], list[str]]:
    """Every sun_*.jpg directly in a class folder, as (relative paths, 0-based labels, classes), in
    class order then file name: the whole set that torchvision's SUN397 lists (it has no split)."""
    base, folders = _resolve(root)
    relpaths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        with os.scandir(base / folder) as entries:
            names = sorted(
                e.name for e in entries if e.is_file() and e.name.startswith("sun_") and e.name.endswith(".jpg")
            )
        relpaths.extend(f"{folder}/{n}" for n in names)
        labels.extend([label] * len(names))
    return relpaths, labels, [class_name(f) for f in folders]


@register_listing(NAME)
def whole_archive(root: str | None) -> FileSamples:
    """Every image of the 397 classes, all partitions together (for `tlbench-data verify`)."""
    base, _ = _resolve(root)
    relpaths, labels, _ = all_images(root)
    return FileSamples(base, relpaths, np.array(labels))
