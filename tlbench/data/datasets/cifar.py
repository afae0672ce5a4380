"""CIFAR-10 and CIFAR-100: the pickled "python version" batches, read into memory.

The archives extract to `cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}` and
`cifar-100-python/{train, test, meta}`. Each batch is a Python 2 pickle of a dict with `data`, a uint8
(N, 3072) array (channel-planar: 1024 red, 1024 green, 1024 blue values, each a 32x32 image row-major)
and `labels` (CIFAR-10) or `fine_labels` / `coarse_labels` (CIFAR-100), 0-based. The loaders read every
batch when the dataset is built (about 180 MB of pixels, a second or two), which is what torchvision does
too; the images are then served from memory by ArraySamples, reshaped to (N, 32, 32, 3).

Matches torchvision.datasets.CIFAR10 / CIFAR100: the same files in the same order (data_batch_1..5 for
train), the same pixels and labels, the same class order (`label_names` / `fine_label_names` of the
meta file). The pickles are read with a restricted unpickler that only admits numpy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from tlbench.data.layout import require_paths, resolve_root
from tlbench.data.registry import DatasetInfo, DatasetSplits, Resource, register_dataset
from tlbench.data.samples import ArraySamples
from tlbench.errors import ConfigError, DatasetError

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{b}" for b in range(1, 6))

# File checksums as published in torchvision.datasets.cifar (checked by `tlbench-data verify`).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR100_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

CIFAR10_INFO = DatasetInfo(
    title="CIFAR-10",
    num_classes=10,
    metric="top1",
    layout=f"""ROOT/{CIFAR10_DIR}/       (or ROOT is this folder itself)
    data_batch_1 ... data_batch_5   training batches, 10,000 images each (pickled)
    test_batch                      10,000 test images
    batches.meta                    label_names""",
    split_sizes={"train": 50000, "test": 10000},
    resources=(
        Resource(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
        ),
    ),
    checksums=CIFAR10_MD5,
    torchvision="CIFAR10",
)

CIFAR100_INFO = DatasetInfo(
    title="CIFAR-100",
    num_classes=100,
    metric="top1",
    layout=f"""ROOT/{CIFAR100_DIR}/         (or ROOT is this folder itself)
    train     50,000 training images with fine_labels and coarse_labels (pickled)
    test      10,000 test images
    meta      fine_label_names (100), coarse_label_names (20)""",
    split_sizes={"train": 50000, "test": 10000},
    resources=(
        Resource(
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            filename="cifar-100-python.tar.gz",
            md5="eb9058c3a382ffc7106e4002c42a8d85",
        ),
    ),
    checksums=CIFAR100_MD5,
    torchvision="CIFAR100",
)


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch holds: dicts, lists, strings, numbers and uint8 numpy arrays."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # as numpy 1.x wrote it (the real batches)
            ("numpy._core.multiarray", "_reconstruct"),  # as numpy 2.x writes it (re-pickled copies)
            ("numpy.core.multiarray", "scalar"),  # numpy integers in a re-pickled label list
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # Python 3 bytes at protocol 2
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"  # numpy 2 keeps numpy.core only as a deprecated alias
        return super().find_class(module, name)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_pickle(path: Path) -> dict[str, object]:
    """One batch or meta file as a dict with str keys (Python 2 and Python 3 pickles alike)."""
    try:
        with open(path, "rb") as handle:
            entry = _BatchUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError... from a truncated or foreign file
        raise DatasetError(f"{path} is not a readable CIFAR pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(entry, dict):
        raise DatasetError(f"{path} is not a CIFAR pickle: it holds a {type(entry).__name__}, not a dict")
    return {_text(key): value for key, value in entry.items()}


def _field(entry: dict, key: str, path: Path):
    if key not in entry:
        raise DatasetError(f"{path} has no {key!r} entry (found {sorted(entry)}); is it the right file?")
    return entry[key]


def _load_batches(folder: Path, filenames: tuple[str, ...], label_key: str, num_classes: int):
    """Images (N, 32, 32, 3) uint8 and 0-based labels of the batches, concatenated in order."""
    images, labels = [], []
    for filename in filenames:
        path = folder / filename
        entry = _load_pickle(path)
        data = np.asarray(_field(entry, "data", path))
        batch_labels = np.asarray(_field(entry, label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if batch_labels.shape != (len(data),):
            raise DatasetError(f"{path}: {batch_labels.shape} labels for {len(data)} images")
        if len(batch_labels) and (batch_labels.min() < 0 or batch_labels.max() >= num_classes):
            raise DatasetError(f"{path}: {label_key} outside 0..{num_classes - 1}")
        images.append(data)
        labels.append(batch_labels)
    planar = np.concatenate(images).reshape(-1, 3, 32, 32)
    return np.ascontiguousarray(planar.transpose(0, 2, 3, 1)), np.concatenate(labels)


def _class_names(path: Path, key: str, expected: int) -> list[str]:
    names = [_text(n) for n in _field(_load_pickle(path), key, path)]
    if len(names) != expected:
        raise DatasetError(f"{path}: {len(names)} {key}, expected {expected}")
    return names


@register_dataset("cifar10", CIFAR10_INFO)
def cifar10(root: str | None = None) -> DatasetSplits:
    """CIFAR-10: train = data_batch_1..5 (50,000), test = test_batch (10,000); classes in the order of
    batches.meta `label_names` (airplane, automobile, bird, ..., truck)."""
    folder = resolve_root("cifar10", root, "batches.meta", subdirs=(CIFAR10_DIR,))
    require_paths("cifar10", folder, [*CIFAR10_TRAIN, "test_batch"])
    classes = _class_names(folder / "batches.meta", "label_names", 10)
    splits = {}
    for split, filenames in (("train", CIFAR10_TRAIN), ("test", ("test_batch",))):
        images, labels = _load_batches(folder, filenames, "labels", len(classes))
        splits[split] = ArraySamples(images, labels, f"cifar10/{split}")
    return DatasetSplits(name="cifar10", classes=classes, splits=splits, root=str(folder))


@register_dataset("cifar100", CIFAR100_INFO)
def cifar100(root: str | None = None, label_type: str = "fine") -> DatasetSplits:
    """CIFAR-100: train (50,000) and test (10,000). label_type "fine" (default, as torchvision): the 100
    classes in the order of meta `fine_label_names` (alphabetical); "coarse": the 20 superclasses of
    `coarse_label_names`."""
    if label_type not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: dataset.label_type must be 'fine' or 'coarse', got {label_type!r}")
    folder = resolve_root("cifar100", root, "meta", subdirs=(CIFAR100_DIR,))
    require_paths("cifar100", folder, ["train", "test"])
    expected = 100 if label_type == "fine" else 20
    classes = _class_names(folder / "meta", f"{label_type}_label_names", expected)
    splits = {}
    for split in ("train", "test"):
        images, labels = _load_batches(folder, (split,), f"{label_type}_labels", expected)
        splits[split] = ArraySamples(images, labels, f"cifar100/{split}")
    return DatasetSplits(name="cifar100", classes=classes, splits=splits, root=str(folder))
