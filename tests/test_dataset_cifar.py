"""CIFAR-10 / CIFAR-100 on real-format pickled batches: counts, labels, classes, pixels (against
torchvision on the same files), roots, errors, and full-size counts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar as tv_cifar
from fixtures.cifar import CIFAR10_CLASSES, CIFAR100_COARSE, CIFAR100_FINE, build
from test_dataset_configs import builder_params

from tlbench.data import TransferDataModule, build_dataset, dataset_info
from tlbench.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    build(root, "cifar10", per_class=2, test_per_class=1)
    build(root, "cifar100", per_class=2, test_per_class=1)
    return root


def raw_batch(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="latin1")


@pytest.fixture
def no_integrity_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the published md5 of every batch; the fixture's differ."""
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())


def test_cifar10_counts_classes_labels(cifar_root: Path) -> None:
    ds = build_dataset("cifar10", root=str(cifar_root))
    assert ds.name == "cifar10" and ds.metric == "top1"
    assert ds.classes == CIFAR10_CLASSES
    assert Path(ds.root) == cifar_root / "cifar-10-batches-py"
    assert (len(ds.splits["train"]), len(ds.splits["test"])) == (5 * 2 * 10, 10)
    assert set(ds.splits) == {"train", "test"}
    np.testing.assert_array_equal(np.bincount(ds.splits["train"].labels), [10] * 10)
    np.testing.assert_array_equal(np.bincount(ds.splits["test"].labels), [1] * 10)
    # train = data_batch_1..5 in order, labels as stored (0-based already)
    stored = [v for b in range(1, 6) for v in raw_batch(cifar_root / f"cifar-10-batches-py/data_batch_{b}")["labels"]]
    assert ds.splits["train"].labels.tolist() == stored


def test_cifar10_pixels_are_channel_planar_rows(cifar_root: Path) -> None:
    ds = build_dataset("cifar10", root=str(cifar_root))
    row = raw_batch(cifar_root / "cifar-10-batches-py/test_batch")["data"][3]
    image = ds.splits["test"].load(3)
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image)
    # pixel (y=0, x=1): red at 1, green at 1024 + 1, blue at 2048 + 1; pixel (y=2, x=0) at 64
    assert tuple(pixels[0, 1]) == (row[1], row[1025], row[2049])
    assert tuple(pixels[2, 0]) == (row[64], row[1088], row[2112])
    assert ds.splits["test"].describe(3) == "cifar10/test[3]"


def test_cifar10_matches_torchvision(cifar_root: Path, no_integrity_check: None) -> None:
    ds = build_dataset("cifar10", root=str(cifar_root))
    for split, train in (("train", True), ("test", False)):
        tv = tv_cifar.CIFAR10(str(cifar_root), train=train, download=False)
        assert tv.classes == ds.classes
        assert tv.targets == ds.splits[split].labels.tolist()
        np.testing.assert_array_equal(tv.data, ds.splits[split].images)
        assert np.asarray(tv[5][0]).tolist() == np.asarray(ds.splits[split].load(5)).tolist()


def test_cifar100_fine_matches_torchvision(cifar_root: Path, no_integrity_check: None) -> None:
    ds = build_dataset("cifar100", root=str(cifar_root))
    assert ds.classes == CIFAR100_FINE and len(ds.classes) == 100
    assert (len(ds.splits["train"]), len(ds.splits["test"])) == (200, 100)
    for split, train in (("train", True), ("test", False)):
        tv = tv_cifar.CIFAR100(str(cifar_root), train=train, download=False)
        assert tv.classes == ds.classes
        assert tv.targets == ds.splits[split].labels.tolist()
        np.testing.assert_array_equal(tv.data, ds.splits[split].images)


def test_cifar100_coarse_labels(cifar_root: Path) -> None:
    fine = build_dataset("cifar100", root=str(cifar_root))
    coarse = build_dataset("cifar100", root=str(cifar_root), label_type="coarse")
    assert coarse.classes == CIFAR100_COARSE
    stored = raw_batch(cifar_root / "cifar-100-python/train")["coarse_labels"]
    assert coarse.splits["train"].labels.tolist() == stored
    # the fixture's superclass of fine class f is f // 5
    np.testing.assert_array_equal(coarse.splits["test"].labels, fine.splits["test"].labels // 5)
    np.testing.assert_array_equal(coarse.splits["train"].images, fine.splits["train"].images)
    with pytest.raises(ConfigError, match="label_type must be 'fine' or 'coarse'"):
        build_dataset("cifar100", root=str(cifar_root), label_type="superclass")


@pytest.mark.parametrize("name,top", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_root_is_parent_or_top_folder(cifar_root: Path, name: str, top: str) -> None:
    a = build_dataset(name, root=str(cifar_root))
    b = build_dataset(name, root=str(cifar_root / top))
    assert a.root == b.root == str(cifar_root / top)
    assert a.splits["train"].fingerprint() == b.splits["train"].fingerprint()


def test_python3_repickled_batches_load(tmp_path: Path) -> None:
    """A copy re-saved with Python 3 pickle (str keys, numpy 2 names, numpy ints) still loads."""
    build(tmp_path, "cifar10")
    folder = tmp_path / "cifar-10-batches-py"
    entry = raw_batch(folder / "test_batch")
    entry["labels"] = [np.int64(v) for v in entry["labels"]]
    (folder / "test_batch").write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR10_CLASSES}, protocol=5))
    ds = build_dataset("cifar10", root=str(tmp_path))
    assert ds.classes == CIFAR10_CLASSES
    assert ds.splits["test"].labels.tolist() == [int(v) for v in entry["labels"]]


@pytest.mark.parametrize("name,marker", [("cifar10", "batches.meta"), ("cifar100", "meta")])
def test_missing_root_names_dataset_layout_and_download(tmp_path: Path, name: str, marker: str) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset(name, root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert f"({name})" in message and marker in message
    assert dataset_info(name).layout in message
    assert f"tlbench-data download {name} --root" in message
    with pytest.raises(DatasetError, match=r"needs dataset\.root"):
        build_dataset(name)


def test_partial_root_names_missing_batches(tmp_path: Path) -> None:
    build(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()
    (tmp_path / "cifar-10-batches-py/test_batch").unlink()
    with pytest.raises(DatasetError, match=r"missing data_batch_3, test_batch\.") as err:
        build_dataset("cifar10", root=str(tmp_path))
    assert "tlbench-data download cifar10" in str(err.value)
    build(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python/test").unlink()
    with pytest.raises(DatasetError, match=r"cifar-100-python is missing test\."):
        build_dataset("cifar100", root=str(tmp_path))


def test_corrupt_or_foreign_pickles_are_dataset_errors(tmp_path: Path) -> None:
    build(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py/data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])  # truncated download
    with pytest.raises(DatasetError, match=r"data_batch_2 is not a readable CIFAR pickle"):
        build_dataset("cifar10", root=str(tmp_path))

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    batch.write_bytes(pickle.dumps({"data": Payload()}))
    with pytest.raises(DatasetError, match=r"unexpected object pathlib.*in a CIFAR batch"):
        build_dataset("cifar10", root=str(tmp_path))
    assert not (tmp_path / "pwned").exists()

    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"data_batch_2: data is uint8 \(2, 1024\), expected uint8 \(N, 3072\)"):
        build_dataset("cifar10", root=str(tmp_path))
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(DatasetError, match=r"data_batch_2: labels outside 0..9"):
        build_dataset("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_config_builds_and_datamodule_runs(cifar_root: Path, name: str) -> None:
    cfg = builder_params(name)  # the config's own checks: tests/test_dataset_configs.py
    ds = build_dataset(name, root=str(cifar_root), **cfg)
    assert len(ds.classes) == dataset_info(name).num_classes
    dm = TransferDataModule(
        name,
        transform=lambda im: im,
        input_size=(3, 32, 32),
        root=str(cifar_root),
        **cfg,
        val_fraction=0.5,
        train_per_class=1,
    )
    n = len(ds.classes)
    assert dm.split_sizes() == {"train": n, "val": len(ds.splits["train"]) // 2, "test": len(ds.splits["test"])}


@pytest.fixture(scope="module")
def full_size_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-size batches (10,000 zero images each; published per-class counts)."""
    root = tmp_path_factory.mktemp("cifar_full")
    build(root, "cifar10", per_class=1000, test_per_class=1000, zeros=True)
    build(root, "cifar100", per_class=500, test_per_class=100, zeros=True)
    return root


@pytest.mark.parametrize("name,per_class", [("cifar10", (5000, 1000)), ("cifar100", (500, 100))])
def test_full_size_counts_equal_published(full_size_root: Path, name: str, per_class: tuple[int, int]) -> None:
    ds = build_dataset(name, root=str(full_size_root))
    sizes = {split: len(samples) for split, samples in ds.splits.items()}
    assert sizes == dataset_info(name).split_sizes == {"train": 50000, "test": 10000}
    for split, count in zip(("train", "test"), per_class):
        assert set(np.bincount(ds.splits[split].labels).tolist()) == {count}
    assert ds.splits["train"].images.shape == (50000, 32, 32, 3)
    assert ds.splits["train"].images.flags["C_CONTIGUOUS"]
