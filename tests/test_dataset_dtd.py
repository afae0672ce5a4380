"""DTD: dtd/images/<class>/, ten official folds in dtd/labels, split_id, torchvision parity per partition."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from fixtures import dtd as fixture

from tlbench.data import build_dataset, dataset_info
from tlbench.data.datasets.dtd import dtd
from tlbench.data.download import extract
from tlbench.data.verify import verify_dataset
from tlbench.errors import ConfigError, DatasetError

SMALL = sorted(fixture.SMALL_CLASSES)  # ["banded", "braided", "polka-dotted", "zigzagged"]


def listing(samples) -> list[tuple[str, int]]:
    return [(str(samples.path(i)), int(samples.labels[i])) for i in range(len(samples))]


@pytest.fixture
def dtd_root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "textures")


def test_splits_counts_labels_and_classes(dtd_root: Path) -> None:
    ds = build_dataset("dtd", root=str(dtd_root))
    assert ds.name == "dtd" and ds.metric == "top1"
    assert ds.root == str(dtd_root / "dtd")
    assert ds.classes == SMALL
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "val": 8, "test": 8}
    for split, samples in ds.splits.items():
        lines = (dtd_root / "dtd" / "labels" / f"{split}1.txt").read_text().splitlines()
        assert samples.relpaths == [f"images/{line}" for line in lines]
        assert np.bincount(samples.labels).tolist() == [2, 2, 2, 2]
        for i in range(len(samples)):
            assert samples.path(i).parent.name == ds.classes[samples.labels[i]]  # label = class folder
            assert samples.path(i).is_file()
    every = [p for s in ds.splits.values() for p in s.relpaths]
    assert len(set(every)) == len(every) == 4 * 6  # disjoint, and all images of the fold


def test_folds_selected_by_split_id(dtd_root: Path) -> None:
    folds = [build_dataset("dtd", root=str(dtd_root), split_id=k) for k in range(1, 11)]
    every = sorted(p for p in folds[0].splits["train"].relpaths + folds[0].splits["val"].relpaths)
    every = sorted(every + folds[0].splits["test"].relpaths)
    for k, ds in enumerate(folds, 1):
        assert ds.params == {"root": str(dtd_root), "split_id": k}
        assert ds.classes == SMALL  # the label of a class is the same in every fold
        lines = (dtd_root / "dtd" / "labels" / f"test{k}.txt").read_text().splitlines()
        assert ds.splits["test"].relpaths == [f"images/{line}" for line in lines]
        assert sorted(p for s in ds.splits.values() for p in s.relpaths) == every
    assert len({tuple(ds.splits["test"].relpaths) for ds in folds}) > 1  # the folds differ
    for bad in (0, 11, "2", 1.5, True):
        with pytest.raises(ConfigError, match=r"split_id must be an integer in 1\.\.10"):
            build_dataset("dtd", root=str(dtd_root), split_id=bad)


def test_trainval_protocol(dtd_root: Path) -> None:
    plain = build_dataset("dtd", root=str(dtd_root), split_id=4)
    merged = build_dataset("dtd", root=str(dtd_root), split_id=4, trainval=True)
    assert set(merged.splits) == {"train", "test"}
    assert listing(merged.splits["train"]) == listing(plain.splits["train"]) + listing(plain.splits["val"])
    assert listing(merged.splits["test"]) == listing(plain.splits["test"])


@pytest.mark.parametrize("partition", [1, 7])
def test_matches_torchvision(tmp_path: Path, partition: int) -> None:
    from torchvision.datasets import DTD

    root = fixture.build(tmp_path / "tv", torchvision_layout=True)
    ds = build_dataset("dtd", root=str(root), split_id=partition)
    assert ds.root == str(root / "dtd" / "dtd")
    for split in ("train", "val", "test"):
        tv = DTD(str(root), split=split, partition=partition, download=False)
        assert ds.classes == tv.classes
        theirs = [(str(p), int(y)) for p, y in zip(tv._image_files, tv._labels)]
        assert listing(ds.splits[split]) == theirs and len(theirs) == 8


@pytest.mark.parametrize(("newline", "final"), [("\r\n", True), ("\n", False), ("\r\n", False)])
def test_line_endings(tmp_path: Path, dtd_root: Path, newline: str, final: bool) -> None:
    other = fixture.build(tmp_path / "other", newline=newline, final_newline=final)
    raw = (other / "dtd" / "labels" / "train1.txt").read_bytes()
    assert (b"\r\n" in raw) == (newline == "\r\n") and raw.endswith(newline.encode()) == final
    a, b = build_dataset("dtd", root=str(dtd_root)), build_dataset("dtd", root=str(other))
    for split in ("train", "val", "test"):
        assert a.splits[split].relpaths == b.splits[split].relpaths
        assert a.splits[split].labels.tolist() == b.splits[split].labels.tolist()


def test_quirk_images_decode_and_construction_is_lazy(dtd_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.Image

    with monkeypatch.context() as patch:
        patch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("building the dataset opened an image"))
        ds = build_dataset("dtd", root=str(dtd_root))
    loaded = set()
    for samples in ds.splits.values():
        for i in range(len(samples)):
            image = samples.load(i)
            assert image.mode == "RGB" and image.size == (16, 16)
            loaded.add(samples.relpaths[i])
    assert {f"images/{fixture.GRAYSCALE_FILE}", f"images/{fixture.CMYK_FILE}"} <= loaded
    with PIL.Image.open(dtd_root / "dtd" / "images" / fixture.GRAYSCALE_FILE) as raw:
        assert raw.mode == "L"


def test_missing_root_names_dataset_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("dtd", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "Describable Textures Dataset (DTD) (dtd)" in message
    assert "dtd/labels/train1.txt" in message and "dtd/images/<class>" in message


@pytest.mark.parametrize("remove", ["labels/val3.txt", "images/polka-dotted", "images/banded/banded_0002.jpg"])
def test_partial_root_names_missing_files(dtd_root: Path, remove: str) -> None:
    import shutil

    target = dtd_root / "dtd" / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("dtd", root=str(dtd_root), split_id=3)
    message = str(err.value)
    assert remove in message and "tlbench-data download dtd" in message
    if remove.startswith("images/polka"):
        assert "images/polka-dotted/polka-dotted_0001.jpg" in message  # names the files, not just the folder


def test_malformed_line_is_reported(dtd_root: Path) -> None:
    path = dtd_root / "dtd" / "labels" / "train1.txt"
    path.write_text(path.read_text() + "banded_0001.jpg\n")
    with pytest.raises(DatasetError, match=r"train1.txt, line 9: expected '<class>/<file>.jpg'"):
        build_dataset("dtd", root=str(dtd_root))


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True, folds=10)
    info = dataset_info("dtd")
    for split_id in (1, 10):
        ds = build_dataset("dtd", root=str(root), split_id=split_id)
        assert (
            {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 1880, "val": 1880, "test": 1880}
        )
        assert ds.classes == sorted(fixture.CLASSES) and len(ds.classes) == info.num_classes == 47
        assert np.bincount(ds.splits["train"].labels).tolist() == [40] * 47
    report = verify_dataset("dtd", root, decode=False, progress=False)
    assert report.problems == [] and report.split_sizes == info.split_sizes


def test_published_archive_extracts_into_a_loadable_root(tmp_path: Path) -> None:
    downloads = fixture.build_archives(tmp_path / "downloads")
    (resource,) = dataset_info("dtd").resources
    assert resource.filename == "dtd-r1.0.1.tar.gz" and resource.md5 == "fff73e5086ae6bdbea199a49dfb8a4c1"
    extract(downloads / resource.filename, tmp_path / "root")
    for root in (tmp_path / "root", tmp_path / "root" / "dtd"):  # the download folder, or dtd/ itself
        ds = build_dataset("dtd", root=str(root), split_id=2)
        assert ds.root == str(tmp_path / "root" / "dtd")
        assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "val": 8, "test": 8}


def test_info() -> None:
    info = dataset_info("dtd")
    assert info.torchvision == "DTD" and info.metric == "top1"
    assert inspect.signature(dtd).parameters["split_id"].default == 1  # the config's default: test_dataset_configs
