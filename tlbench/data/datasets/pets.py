"""Oxford-IIIT Pet ("cats-dogs"): `images/<Breed>_<n>.jpg`, official split in `annotations/trainval.txt`
and `annotations/test.txt`.

Matches `torchvision.datasets.OxfordIIITPet` with `target_types="category"`: each list line is
`Image CLASS-ID SPECIES BREED-ID`, the label is CLASS-ID - 1, the file is `images/<Image>.jpg`, and
class names are derived as torchvision does: the breed part of the image ID
(`Image.rsplit("_", 1)[0]`), each `_`-separated word title-cased and joined with spaces, ordered by
CLASS-ID ("Abyssinian", "American Bulldog", ...). Only listed images are used: `images/` also holds
stray `.mat` files and unlisted images. Some files named `.jpg` hold PNG data or are RGBA / CMYK;
they are decoded from their content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"

LAYOUT = """ROOT/                       (or ROOT/oxford-iiit-pet/, as torchvision places it)
  images/<Breed>_<n>.jpg                          (from images.tar.gz)
  annotations/trainval.txt                        (from annotations.tar.gz: "Image CLASS-ID SPECIES BREED-ID")
  annotations/test.txt"""

INFO = DatasetInfo(
    title="Oxford-IIIT Pet",
    num_classes=37,
    metric="mean_per_class",
    layout=LAYOUT,
    split_sizes={"train": 3680, "test": 3669},
    resources=(
        Resource(_URL + "images.tar.gz", "images.tar.gz", md5="5c4f3ee8e5d25df40f4fd59a7f44e54c"),
        Resource(_URL + "annotations.tar.gz", "annotations.tar.gz", md5="95a8c909bbe2e81eed6a22bccdf3f68f"),
    ),
    torchvision="OxfordIIITPet",
)

# our split name -> the official list file
SPLIT_FILES = {"train": "annotations/trainval.txt", "test": "annotations/test.txt"}


def class_name(image_id: str) -> str:
    """torchvision's class name of an image ID: "american_pit_bull_terrier_12" -> "American Pit Bull Terrier"."""
    return " ".join(part.title() for part in image_id.rsplit("_", 1)[0].split("_"))


def parse_list(path: Path) -> list[tuple[str, int]]:
    """(image ID, 0-based CLASS-ID) per line of trainval.txt / test.txt / list.txt ('#' lines skipped)."""
    entries = []
    for number, line in enumerate(read_lines(path), 1):
        line = line.strip()
        if line.startswith("#"):
            continue
        fields = line.rsplit(None, 3)  # the image ID is everything before the last three numbers
        try:
            if len(fields) != 4:
                raise ValueError
            image_id, class_id = fields[0], int(fields[1])
        except ValueError:
            raise DatasetError(
                f"{path}, line {number}: expected 'Image CLASS-ID SPECIES BREED-ID', got {line!r}"
            ) from None
        if class_id < 1:
            raise DatasetError(f"{path}, line {number}: CLASS-ID must be >= 1, got {class_id}")
        entries.append((image_id, class_id - 1))
    return entries


@register_dataset("pets", INFO)
def pets(root: str | None = None) -> DatasetSplits:
    """Official trainval (as "train") and test; no official val (use dataset.val_fraction)."""
    base = resolve_root("pets", root, "annotations/trainval.txt", subdirs=("oxford-iiit-pet",))
    require_paths("pets", base, ["images", *SPLIT_FILES.values()])

    entries = {split: parse_list(base / relpath) for split, relpath in SPLIT_FILES.items()}

    names: dict[int, str] = {}
    for split, items in entries.items():
        for image_id, label in items:
            name = names.setdefault(label, class_name(image_id))
            if name != class_name(image_id):
                raise DatasetError(
                    f"{base / SPLIT_FILES[split]}: CLASS-ID {label + 1} is used for both {name!r} and "
                    f"{class_name(image_id)!r} (image {image_id})"
                )
    if sorted(names) != list(range(len(names))):
        absent = sorted(set(range(max(names, default=-1) + 1)) - set(names))
        raise DatasetError(f"pets: CLASS-IDs {[c + 1 for c in absent]} appear in no list under {base / 'annotations'}")
    classes = [names[c] for c in range(len(names))]

    splits = {}
    for split, items in entries.items():
        relpaths = [f"images/{image_id}.jpg" for image_id, _ in items]
        splits[split] = FileSamples(base, relpaths, np.array([label for _, label in items], dtype=np.int64))
    return DatasetSplits(name="pets", classes=classes, splits=splits, root=str(base))
