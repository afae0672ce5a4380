"""Food-101: 101 dishes, the official 75,750 / 25,250 split from meta/train.txt and meta/test.txt.

The lists hold `<class>/<id>` per line without the `.jpg` extension; the class is the part before the
first `/` and must be one of meta/classes.txt. Classes are sorted by name (torchvision.datasets.Food101
sorts the keys of meta/{train,test}.json), so labels and files equal torchvision's. classes.txt itself
is not in that order: it lists `cheesecake` before `cheese_plate` (an order that ignores the
underscore), so label i is the i-th name of sorted(classes.txt), not its i-th line. Indexing reads
the three text files and checks the 101 class folders; it opens no image and stats no image file, so
101,000 images are indexed in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import read_lines, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

NAME = "food101"
META = ("meta/classes.txt", "meta/train.txt", "meta/test.txt")

LAYOUT = """ROOT/  (or ROOT/food-101/)
  images/apple_pie/1005649.jpg ...   (101 class folders, 1,000 images each)
  meta/classes.txt   (one class per line)
  meta/train.txt     (<class>/<id> per line, no extension: 750 per class)
  meta/test.txt      (<class>/<id> per line, no extension: 250 per class)
  meta/labels.txt, meta/train.json, meta/test.json   (in the archive; not needed)"""

INFO = DatasetInfo(
    title="Food-101",
    num_classes=101,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 75750, "test": 25250},
    resources=(
        Resource(
            url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
            filename="food-101.tar.gz",
            md5="85eeb15f3717b99a5da872d97d918f87",
        ),
    ),
    instructions="download food-101.tar.gz (about 5 GB) from "
    "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ and extract it into ROOT",
    torchvision="Food101",
)


def _read_list(path: Path, class_index: dict[str, int]) -> tuple[list[str], np.ndarray]:
    relpaths: list[str] = []
    labels: list[int] = []
    unknown: list[str] = []
    for line in read_lines(path):
        entry = line.strip()
        label = class_index.get(entry.partition("/")[0])
        if label is None:
            unknown.append(entry)
            continue
        relpaths.append(f"images/{entry}.jpg")
        labels.append(label)
    if unknown:
        raise DatasetError(
            f"food101: {path} lists images of classes that are not in meta/classes.txt: {', '.join(unknown[:5])}"
            + (f" ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
        )
    return relpaths, np.array(labels, dtype=np.int64)


@register_dataset(NAME, INFO)
def food101(root: str | None = None) -> DatasetSplits:
    base = resolve_root(NAME, root, "meta", subdirs=("food-101",))
    require_paths(NAME, base, [*META, "images"])
    classes = sorted({line.strip() for line in read_lines(base / "meta" / "classes.txt")})
    require_paths(NAME, base, [f"images/{c}" for c in classes])
    class_index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        relpaths, labels = _read_list(base / "meta" / f"{split}.txt", class_index)
        if not relpaths:
            raise DatasetError(f"food101: {base / 'meta' / f'{split}.txt'} lists no images")
        splits[split] = FileSamples(base, relpaths, labels)
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
