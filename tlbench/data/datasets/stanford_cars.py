"""Stanford Cars (Krause et al. 2013): 196 car models, the devkit's .mat annotations, 8,144 / 8,041 images.

Matches torchvision.datasets.StanfordCars: the same files (ROOT/stanford_cars/{devkit/, cars_train/,
cars_test/, cars_test_annos_withlabels.mat}), labels `class - 1` from the annotation structs, and
classes in the order of `devkit/cars_meta.mat` `class_names`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import as_array, load_mat, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

NAME = "stanford_cars"

LAYOUT = """ROOT/stanford_cars/          (or ROOT itself)
  devkit/cars_meta.mat            class_names: 196 names, 1-based class i = class_names[i-1]
  devkit/cars_train_annos.mat     annotations: struct (bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname)
  cars_test_annos_withlabels.mat  annotations of the test images, with class
  cars_train/00001.jpg ... 08144.jpg
  cars_test/00001.jpg ... 08041.jpg"""

INSTRUCTIONS = """the original Stanford URLs are dead (pytorch/vision#7545, #7930), so there is no automatic download.
  1. Get car_devkit.tgz (md5 c3b158d763b6e2245038c8ad08e45376), cars_train.tgz (md5 065e5b463ae28d29e77c1b4b166cfe61),
     cars_test.tgz (md5 4ce7ebf6a94d07f1952d94dd34c4d501) and cars_test_annos_withlabels.mat
     (md5 b0a2b23655a3edd16d84508592a98d10) from a mirror you trust; check the md5s.
  2. mkdir -p ROOT/stanford_cars && cd ROOT/stanford_cars
  3. tar -xzf car_devkit.tgz && tar -xzf cars_train.tgz && tar -xzf cars_test.tgz
  4. put cars_test_annos_withlabels.mat into ROOT/stanford_cars/ (beside devkit/, not inside it)"""

INFO = DatasetInfo(
    title="Stanford Cars",
    num_classes=196,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 8144, "test": 8041},
    instructions=INSTRUCTIONS,
    checksums={"cars_test_annos_withlabels.mat": "b0a2b23655a3edd16d84508592a98d10"},
    torchvision="StanfordCars",
)

# split -> (annotation .mat, image folder), relative to the resolved root (as in torchvision)
SPLIT_FILES = {
    "train": ("devkit/cars_train_annos.mat", "cars_train"),
    "test": ("cars_test_annos_withlabels.mat", "cars_test"),
}


def _class_names(path: Path) -> list[str]:
    mat = load_mat(path)
    if "class_names" not in mat:
        raise DatasetError(f"{path} has no 'class_names' variable (found {sorted(k for k in mat if k[0] != '_')})")
    return [str(name) for name in as_array(mat["class_names"]).tolist()]


def _annotations(path: Path, num_classes: int) -> tuple[list[str], np.ndarray]:
    """(file names, 0-based labels) from an `annotations` struct array, in file order."""
    mat = load_mat(path)
    annotations = as_array(mat.get("annotations", np.empty(0)))
    names = annotations.dtype.names or ()
    if "fname" not in names or "class" not in names:
        raise DatasetError(
            f"{path}: 'annotations' lacks the fields fname and class (has {names}); is it a devkit file?"
        )
    fnames = [str(f) for f in annotations["fname"]]
    labels = np.array([int(c) for c in annotations["class"]], dtype=np.int64) - 1  # 1-based on disk
    if len(labels) == 0:
        raise DatasetError(f"{path}: no annotations")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f"{path}: class ids outside 1..{num_classes}")
    return fnames, labels


@register_dataset(NAME, INFO)
def stanford_cars(root: str | None = None) -> DatasetSplits:
    """The official train/test split of the devkit; labels 0-based; classes in cars_meta.mat order."""
    base = resolve_root(NAME, root, "devkit/cars_meta.mat", subdirs=("stanford_cars",))
    require_paths(NAME, base, [p for pair in SPLIT_FILES.values() for p in pair])
    classes = _class_names(base / "devkit/cars_meta.mat")
    splits = {}
    for split, (mat_file, folder) in SPLIT_FILES.items():
        fnames, labels = _annotations(base / mat_file, len(classes))
        splits[split] = FileSamples(base, [f"{folder}/{f}" for f in fnames], labels)
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
