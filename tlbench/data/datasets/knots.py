"""Wood knots ("wood" in FNE 2018, "Knots6" in HPAI-BSC's tl-tradeoff): 424 knot images in 6 classes.

What is known (reference/datasets.md §10): HPAI-BSC/tl-tradeoff `data/splits/knots6/*.csv` list 424 files
`knotNNNN.jpg` (numbers up to 0438) in six classes, sound_knot 179, dry_knot 69, edge_knot 65, leaf_knot 47,
horn_knot 35, encased_knot 29, arranged as `wood/{train,test}/<class>/knotNNNN.jpg`, split 338 / 86. The
source is, by inference, the University of Oulu knot set (438 images, 7 classes: the 14 decayed knots are
the ones missing). The original archive's layout, file format and class folder names are NOT verified.

Layouts accepted under ROOT (or ROOT/wood/, ROOT/knots/):
  * class folders: `<class>/knotNNNN.jpg`, the six class names above (plus optional `decayed_knot/`, used
    only with include_decayed=true);
  * HPAI-BSC's arrangement: `train/<class>/knotNNNN.jpg` and `test/<class>/knotNNNN.jpg`; both folders are
    pooled for the folds, and protocol=hpai uses them as the train/test split (338 / 86).

Protocol "kfold" (default): a stratified k-fold split (num_folds=5) drawn with fold_seed and written to
`ROOT/tlbench_splits/knots_5fold_seed0.txt` (or the cache folder), then reused; split_id=i tests on fold i
and trains on the others (339 / 85 for fold 0 of the 424 images). Classes are sorted by name; metric top-1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlbench.data.images import is_image_file
from tlbench.data.layout import check_int, missing_data_error, require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, register_dataset
from tlbench.data.samples import FileSamples
from tlbench.data.stored_splits import load_or_create_split
from tlbench.errors import DatasetError

NAME = "knots"
CLASSES = ["dry_knot", "edge_knot", "encased_knot", "horn_knot", "leaf_knot", "sound_knot"]
DECAYED = "decayed_knot"  # the 7th class of the raw set; folder name unverified
SUBDIRS = ("wood", "knots", "Knots6", "knots6")

LAYOUT = """ROOT/  (or ROOT/wood/, ROOT/knots/)
  dry_knot/knot0003.jpg ...   edge_knot/  encased_knot/  horn_knot/  leaf_knot/  sound_knot/
  decayed_knot/   (optional: only with dataset.include_decayed=true)
or HPAI-BSC's arrangement (tl-tradeoff data/splits/knots6/*.csv):
  train/<class>/knotNNNN.jpg   test/<class>/knotNNNN.jpg
424 images knotNNNN.jpg: sound 179, dry 69, edge 65, leaf 47, horn 35, encased 29.
tlbench_splits/knots_5fold_seed0.txt is written on first use when ROOT is writable."""

INSTRUCTIONS = """there is no public download URL that tlbench knows of. Steps:
  1. Get the University of Oulu wood knot image set (Silven, Niskanen & Kauppinen, "Wood inspection with
     non-supervised clustering", Machine Vision and Applications 13:275-285, 2003) from its authors or
     from the FNE / HPAI-BSC group (Barcelona Supercomputing Center), who used it as "wood" / "Knots6".
  2. Put each image in the folder of its knot type: ROOT/<class>/knotNNNN.jpg with the class folders
     dry_knot, edge_knot, encased_knot, horn_knot, leaf_knot, sound_knot (decayed knots in decayed_knot/,
     or leave them out). The class of each file is listed in HPAI-BSC/tl-tradeoff
     data/splits/knots6/all_images.csv (columns: relpath, split, filename, label). A copy arranged as
     wood/{train,test}/<class>/ by that repository's scripts works as it is.
  3. Convert the images to a common format if they are not JPEG (any format PIL reads works; the content
     decides, not the extension).
Unverified: the original download location, file format (JPEG vs PPM/BMP) and folder names of the raw set."""

INFO = DatasetInfo(
    title="Wood knots (Knots6, FNE 'wood')",
    num_classes=6,
    metric="top1",
    layout=LAYOUT,
    # fold 0 of the default stratified 5-fold split of the 424 images (HPAI-BSC's fixed split: 338 / 86)
    split_sizes={"train": 339, "test": 85},
    instructions=INSTRUCTIONS,
)


def _resolve(root: str | None) -> tuple[Path, bool]:
    """(the folder holding the class folders or train/ test/, whether it is HPAI-BSC's arrangement)."""
    if not root:
        raise DatasetError(f"dataset={NAME} needs dataset.root=PATH (the folder holding the knot images)")
    for marker, hpai in (("sound_knot", False), ("train/sound_knot", True)):
        try:
            return resolve_root(NAME, root, marker, SUBDIRS), hpai
        except DatasetError:
            continue
    raise missing_data_error(NAME, Path(root).expanduser(), [f"{c}/" for c in CLASSES])


def list_images(base: Path, hpai: bool, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """Relative paths and labels, sorted by class and then file name (train/ and test/ pooled)."""
    entries: list[tuple[int, str, str]] = []
    for label, name in enumerate(classes):
        for folder in (f"train/{name}", f"test/{name}") if hpai else (name,):
            if (base / folder).is_dir():
                entries.extend((label, f, f"{folder}/{f}") for f in os.listdir(base / folder) if is_image_file(f))
    entries.sort()
    return [e[2] for e in entries], np.array([e[0] for e in entries], dtype=np.int64)


def assign_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Stratified folds: each class permuted with default_rng(seed) (classes in label order) and dealt
    round-robin, the dealing continuing across classes, so fold sizes differ by at most one overall and
    per class. Written out by hand (no scikit-learn) so the draw cannot change with a library version."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in range(int(labels.max()) + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        folds[members] = (offset + np.arange(len(members))) % num_folds
        offset = (offset + len(members)) % num_folds
    return folds


@register_dataset(NAME, INFO)
def knots(
    root: str | None = None,
    split_id: int = 0,
    num_folds: int = 5,
    fold_seed: int = 0,
    protocol: str = "kfold",
    include_decayed: bool = False,
) -> DatasetSplits:
    base, hpai = _resolve(root)
    classes = sorted([*CLASSES, DECAYED]) if include_decayed else list(CLASSES)
    folders = [f"{s}/{c}" for s in ("train", "test") for c in CLASSES] if hpai else list(classes)
    if include_decayed and not hpai:
        folders.append(DECAYED)
    require_paths(NAME, base, folders)
    relpaths, labels = list_images(base, hpai, classes)
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise missing_data_error(NAME, base, [f"images in {c}/" for c in empty])

    if protocol == "hpai":
        if not hpai:
            raise DatasetError(
                "knots: protocol=hpai needs HPAI-BSC's arrangement ROOT/train/<class>/ and ROOT/test/<class>/; "
                f"{base} holds class folders only. Use protocol=kfold."
            )
        in_test = np.array([p.startswith("test/") for p in relpaths])
        parts = {"train": np.flatnonzero(~in_test), "test": np.flatnonzero(in_test)}
    elif protocol == "kfold":
        check_int("dataset.num_folds", num_folds, minimum=2)
        check_int("dataset.split_id", split_id, minimum=0, maximum=num_folds - 1)
        if counts.min() < num_folds:
            raise DatasetError(
                f"knots: class {classes[int(counts.argmin())]} has {counts.min()} images, fewer than "
                f"{num_folds} folds; is {base} complete?"
            )
        names = [f"fold{i}" for i in range(num_folds)]
        filename = f"{NAME}_{num_folds}fold_seed{fold_seed}{'_decayed' if include_decayed else ''}.txt"
        header = [
            f"tlbench split file: {NAME} stratified {num_folds}-fold split of {len(classes)} classes, "
            f"fold_seed={fold_seed}; split_id=i tests on fold i",
            "dealt by tlbench.data.datasets.knots.assign_folds with numpy.random.default_rng; "
            "do not edit (delete to redraw)",
        ]

        def generate() -> dict[str, np.ndarray]:
            folds = assign_folds(labels, num_folds, fold_seed)
            return {name: np.flatnonzero(folds == i) for i, name in enumerate(names)}

        stored, _ = load_or_create_split(base, filename, relpaths, labels, generate, header, split_names=names)
        test = stored[f"fold{split_id}"]
        train = np.sort(np.concatenate([v for k, v in stored.items() if k != f"fold{split_id}"]))
        parts = {"train": train, "test": test}
    else:
        raise DatasetError(f"knots: dataset.protocol must be 'kfold' or 'hpai', got {protocol!r}")

    splits = {
        split: FileSamples(base, [relpaths[i] for i in indices], labels[indices]) for split, indices in parts.items()
    }
    return DatasetSplits(name=NAME, classes=classes, splits=splits, root=str(base))
