"""Stanford Dogs (Khosla et al. 2011): 120 breeds from ImageNet, official 12,000/8,580 split.

`train_list.mat` / `test_list.mat` (from lists.tar) hold `file_list` (N x 1 cell of
`'n02085620-Chihuahua/n02085620_5927.jpg'`, relative to `Images/`) and `labels` (N x 1 double, 1..120).
Labels are `labels - 1`; the class names are the breed folder names (e.g. `n02085620-Chihuahua`) in label
order, which is the sorted order of the folders. One "jpg" (`n02105855_2933.jpg`) holds PNG data; the decoder
reads the format from the content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlbench.data.layout import as_array, load_mat, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.errors import DatasetError

NAME = "stanford_dogs"
LISTS = {"train": "train_list.mat", "test": "test_list.mat"}
BASE_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs/"

LAYOUT = """ROOT/
  train_list.mat               file_list (12,000 paths relative to Images/), labels 1..120   (from lists.tar)
  test_list.mat                file_list (8,580), labels
  Images/<wnid>-<Breed>/<wnid>_<n>.jpg                                                       (from images.tar)"""

INFO = DatasetInfo(
    title="Stanford Dogs",
    num_classes=120,
    metric="top1",
    layout=LAYOUT,
    split_sizes={"train": 12000, "test": 8580},
    resources=(
        Resource(BASE_URL + "images.tar", "images.tar", md5="1bb1f2a596ae7057f99d7d75860002ef"),
        Resource(BASE_URL + "lists.tar", "lists.tar", md5="edbb9f16854ec66506b5f09b583e0656"),
    ),
    instructions=(
        f"download images.tar and lists.tar from {BASE_URL} and extract both into ROOT "
        "(giving ROOT/Images/ and ROOT/train_list.mat, ROOT/test_list.mat)"
    ),
    # md5s of lists.tar's split files, as recorded by several public Stanford Dogs loaders.
    checksums={
        "train_list.mat": "d37f459eacccfa4d299373dffba9648d",
        "test_list.mat": "66f60c285efbc3ce2fb7893bd26c6b80",
    },
)


def _as_str(item: object) -> str:
    """A cell entry after loadmat(squeeze_me=True): a str, or a (nested) array holding one."""
    while isinstance(item, np.ndarray):
        item = item.item() if item.size == 1 else item.ravel()[0]
    return str(item)


def _read_list(path: Path) -> tuple[list[str], np.ndarray]:
    mat = load_mat(path)
    for key in ("file_list", "labels"):
        if key not in mat:
            raise DatasetError(
                f"{NAME}: {path} has no '{key}' variable (found {sorted(k for k in mat if k[0] != '_')})"
            )
    files = [_as_str(x).replace("\\", "/") for x in as_array(mat["file_list"]).ravel()]
    raw = as_array(mat["labels"]).ravel().astype(np.float64)
    if len(files) != len(raw):
        raise DatasetError(f"{NAME}: {path} lists {len(files)} files but {len(raw)} labels")
    if not np.all(raw == np.round(raw)) or (len(raw) and raw.min() < 1):
        raise DatasetError(f"{NAME}: {path} should hold integer labels from 1, got {sorted(set(raw.tolist()))[:10]}")
    return files, raw.astype(np.int64) - 1  # 1-based on disk


@register_dataset(NAME, INFO)
def stanford_dogs(root: str | None = None) -> DatasetSplits:
    """The official split of train_list.mat / test_list.mat (no validation split: use dataset.val_fraction)."""
    base = resolve_root(NAME, root, "train_list.mat", subdirs=("stanford_dogs", "StanfordDogs"))
    require_paths(NAME, base, [*LISTS.values(), "Images/"])
    lists = {split: _read_list(base / filename) for split, filename in LISTS.items()}

    # Class names from the folders: each label must name exactly one breed folder, and every label 0..K-1 occurs.
    folder_of: dict[int, set[str]] = {}
    for files, labels in lists.values():
        for relpath, label in zip(files, labels.tolist()):
            folder_of.setdefault(label, set()).add(relpath.split("/", 1)[0])
    ambiguous = {label + 1: sorted(f) for label, f in folder_of.items() if len(f) > 1}
    if ambiguous:
        raise DatasetError(f"{NAME}: these labels (1-based) cover several breed folders: {ambiguous}")
    absent = sorted(set(range(max(folder_of, default=-1) + 1)) - set(folder_of))
    if absent:
        raise DatasetError(f"{NAME}: labels (1-based) {[a + 1 for a in absent][:10]} occur in no split list")
    classes = [next(iter(folder_of[label])) for label in range(len(folder_of))]
    if len(set(classes)) != len(classes):
        raise DatasetError(f"{NAME}: one breed folder carries several labels in {', '.join(LISTS.values())}")

    splits = {split: FileSamples(base / "Images", files, labels) for split, (files, labels) in lists.items()}
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
