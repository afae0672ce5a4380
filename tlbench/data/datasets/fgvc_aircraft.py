"""FGVC-Aircraft 2013b (Maji et al. 2013): 100 variants / 70 families / 30 manufacturers, official
train / val / test of 3,334 / 3,333 / 3,333 images.

Matches torchvision.datasets.FGVCAircraft for every split and annotation level: the same files
(data/images/<id>.jpg), classes in the order of data/{variants,families,manufacturers}.txt, and labels
from data/images_<level>_<split>.txt, whose lines are `<id> <label>` split at the FIRST space (labels
contain spaces and slashes, e.g. "F/A-18", "Cessna 172").

One deliberate difference in the pixels, not in the files or labels: the 20-pixel copyright banner at
the bottom of every image is cropped by default, as the dataset's README asks (torchvision keeps it);
`crop_banner=False` gives torchvision's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlbench.data.layout import read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import ConfigError, DatasetError

NAME = "fgvc_aircraft"
BANNER_PIXELS = 20  # the copyright banner at the bottom of every image (official README)
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}

LAYOUT = """ROOT/fgvc-aircraft-2013b/          (or ROOT itself)
  data/images/<7-digit id>.jpg            10,000 images
  data/variants.txt, families.txt, manufacturers.txt   class names, one a line (the class order)
  data/images_<level>_<split>.txt         lines `<id> <label>`, level in variant/family/manufacturer,
                                          split in train/val/trainval/test"""

INFO = DatasetInfo(
    title="FGVC-Aircraft 2013b",
    num_classes=100,
    metric="mean_per_class",
    layout=LAYOUT,
    split_sizes={"train": 3334, "val": 3333, "test": 3333},
    resources=(
        Resource(
            url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            filename="fgvc-aircraft-2013b.tar.gz",
            md5="d4acdd33327262359767eeaa97a4f732",
        ),
    ),
    torchvision="FGVCAircraft",
)


@dataclass
class BannerCroppedSamples(FileSamples):
    """FileSamples whose images lose their bottom `crop` rows (kept whole when not taller than that)."""

    crop: int = BANNER_PIXELS

    def load(self, index: int) -> Image.Image:
        image = super().load(index)
        if image.height > self.crop:
            image = image.crop((0, 0, image.width, image.height - self.crop))
        return image

    def fingerprint(self) -> str:
        return f"{super().fingerprint()}-crop{self.crop}"


def parse_split_file(path: Path, class_to_idx: dict[str, int]) -> tuple[list[str], list[int]]:
    """Image ids (strings, leading zeros kept) and 0-based labels of one `images_<level>_<split>.txt`."""
    ids: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.strip().split(" ", 1)
        if len(parts) != 2:
            raise DatasetError(f"{path}:{number}: expected '<id> <label>', got {line!r}")
        image_id, label = parts
        if label not in class_to_idx:
            raise DatasetError(f"{path}:{number}: label {label!r} is not in the class list")
        ids.append(image_id)
        labels.append(class_to_idx[label])
    return ids, labels


@register_dataset(NAME, INFO)
def fgvc_aircraft(
    root: str | None = None, annotation_level: str = "variant", trainval: bool = False, crop_banner: bool = True
) -> DatasetSplits:
    """Official splits: train / val / test, or with `trainval=True` train = trainval and no val.

    annotation_level: variant (100 classes), family (70) or manufacturer (30)."""
    if annotation_level not in LEVELS:
        raise ConfigError(f"dataset.annotation_level must be one of {sorted(LEVELS)}, got {annotation_level!r}")
    base = resolve_root(NAME, root, "data/images", subdirs=("fgvc-aircraft-2013b",))
    wanted = {"train": "trainval" if trainval else "train", "test": "test"}
    if not trainval:
        wanted["val"] = "val"
    split_files = {split: f"data/images_{annotation_level}_{name}.txt" for split, name in wanted.items()}
    classes_file = f"data/{LEVELS[annotation_level]}"
    require_paths(NAME, base, [classes_file, *split_files.values()])
    classes = [line.strip() for line in read_lines(base / classes_file)]
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{base / classes_file} lists a class twice")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    splits = {}
    for split in ("train", "val", "test"):
        if split not in split_files:
            continue
        ids, labels = parse_split_file(base / split_files[split], class_to_idx)
        relpaths = [f"data/images/{i}.jpg" for i in ids]
        if crop_banner:
            splits[split] = BannerCroppedSamples(base, relpaths, np.array(labels))
        else:
            splits[split] = FileSamples(base, relpaths, np.array(labels))
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
