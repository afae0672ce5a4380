"""SUN397: ClassName.txt order, the 10 official partitions by split_id, formats hidden under .jpg, and
torchvision's SUN397 (no split) listing of the whole set on the same fixture."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import sun397 as fixture
from tlbench.data import build_dataset, dataset_info
from tlbench.data.datasets.sun397 import all_images, sun397
from tlbench.data.samples import FileSamples
from tlbench.errors import ConfigError, DatasetError

CLASSES = ["abbey", "bakery/shop", "church/outdoor"]


@pytest.fixture(scope="module")
def sun_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixture.build(tmp_path_factory.mktemp("sun"))


def _partition(root: Path, kind: str, split_id: int) -> list[str]:
    path = root / "SUN397" / f"{kind}_{split_id:02d}.txt"
    return [line.lstrip("/") for line in path.read_bytes().decode().split("\r\n") if line]  # CRLF in the fixture


def test_counts_labels_and_classes(sun_root: Path) -> None:
    data = build_dataset("sun397", root=str(sun_root))
    assert data.classes == CLASSES and data.metric == "top1"
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6, "test": 6}
    assert Path(data.root) == sun_root / "SUN397"
    for samples in data.splits.values():
        assert np.bincount(samples.labels).tolist() == [2, 2, 2]
        for relpath, label in zip(samples.relpaths, samples.labels):  # label = the folder's class
            assert relpath.rsplit("/", 1)[0] == f"{CLASSES[label][0]}/{CLASSES[label]}"
            assert (Path(data.root) / relpath).is_file()


@pytest.mark.parametrize("split_id", [1, 2, 10])
def test_split_id_selects_the_partition_files(sun_root: Path, split_id: int) -> None:
    data = build_dataset("sun397", root=str(sun_root), split_id=split_id)
    assert data.splits["train"].relpaths == _partition(sun_root, "Training", split_id)
    assert data.splits["test"].relpaths == _partition(sun_root, "Testing", split_id)
    assert not set(data.splits["train"].relpaths) & set(data.splits["test"].relpaths)


def test_partitions_differ_and_bad_split_ids_are_refused(sun_root: Path) -> None:
    trains = {
        tuple(build_dataset("sun397", root=str(sun_root), split_id=k).splits["train"].relpaths) for k in range(1, 11)
    }
    assert len(trains) > 5
    for bad in (0, 11, "1", True):
        with pytest.raises(ConfigError, match="split_id"):
            build_dataset("sun397", root=str(sun_root), split_id=bad)


@pytest.mark.parametrize("where", ["SUN397/Partitions", "Partitions", "."])
def test_partitions_found_where_partitions_zip_was_extracted(tmp_path: Path, where: str) -> None:
    root = fixture.build(tmp_path, partitions_at=where, write_images=False, newline="\n", final_newline=True)
    # partitions inside SUN397/ are found from either folder; those beside it from ROOT only
    for given in (root, root / "SUN397") if where.startswith("SUN397") else (root,):
        data = build_dataset("sun397", root=str(given), split_id=4)
        assert len(data.splits["train"]) == len(data.splits["test"]) == 6
        assert Path(data.root) == root / "SUN397"


def test_formats_hidden_under_jpg_decode(sun_root: Path) -> None:
    from PIL import Image

    relpaths, labels, _ = all_images(str(sun_root))
    samples = FileSamples(sun_root / "SUN397", relpaths, np.array(labels))
    formats = {}
    for i in range(len(samples)):
        with Image.open(samples.path(i)) as raw:
            formats[(raw.format, raw.mode)] = formats.get((raw.format, raw.mode), 0) + 1
        image = samples.load(i)
        assert image.mode == "RGB" and image.size == (16, 16)
    assert {("BMP", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("JPEG", "L")} <= set(formats)
    assert all(p.endswith(".jpg") for p in relpaths)


def test_matches_torchvision_listing_and_classes(sun_root: Path) -> None:
    from torchvision.datasets import SUN397

    tv = SUN397(str(sun_root), download=False)
    relpaths, labels, classes = all_images(str(sun_root))
    assert classes == tv.classes == CLASSES
    tv_listing = sorted(
        (p.relative_to(sun_root / "SUN397").as_posix(), int(t)) for p, t in zip(tv._image_files, tv._labels)
    )
    assert sorted(zip(relpaths, labels)) == tv_listing and len(tv_listing) == 18  # Thumbs.db is not listed
    # the partitions (12 images each) leave images out, as in the real set
    tv_labels = dict(tv_listing)
    for split_id in (1, 7):
        data = build_dataset("sun397", root=str(sun_root), split_id=split_id)
        assert data.classes == tv.classes
        for samples in data.splits.values():
            assert [tv_labels[p] for p in samples.relpaths] == samples.labels.tolist()


def test_missing_root_names_files_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("sun397", root=str(tmp_path))
    message = str(err.value)
    assert "SUN397 (sun397)" in message and "ClassName.txt" in message


def test_partial_root_names_missing_class_folders_and_partitions(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    church = root / "SUN397/c/church/outdoor"
    church.rename(tmp_path / "moved")
    with pytest.raises(DatasetError) as err:
        build_dataset("sun397", root=str(root))
    assert str(err.value).splitlines()[0].endswith("is missing c/church/outdoor.")
    church.mkdir()  # the folder without its images: the listed ones are named
    with pytest.raises(DatasetError) as err:
        build_dataset("sun397", root=str(root))
    assert "is missing c/church/outdoor/sun_" in str(err.value).splitlines()[0]
    church.rmdir()
    (tmp_path / "moved").rename(church)
    (root / "SUN397/Training_03.txt").unlink()
    assert len(build_dataset("sun397", root=str(root), split_id=2).splits["train"]) == 6
    with pytest.raises(DatasetError) as err:
        build_dataset("sun397", root=str(root), split_id=3)
    assert "Partitions/Training_03.txt (from Partitions.zip)" in str(err.value)
    assert "tlbench-data download sun397" in str(err.value)
    (root / "SUN397/Testing_05.txt").unlink()
    with pytest.raises(DatasetError, match=r"is missing Testing_05\.txt"):
        build_dataset("sun397", root=str(root), split_id=5)


def test_a_missing_listed_image_is_named(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    relpath = _partition(root, "Testing", 1)[4]
    (root / "SUN397" / relpath).unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("sun397", root=str(root), split_id=1)
    message = str(err.value)
    assert message.splitlines()[0].endswith(f"is missing {relpath}.")
    assert "tlbench-data download sun397 --root " in message
    # a partition that does not list it still builds
    unlisted = [
        k for k in range(2, 11) if relpath not in _partition(root, "Training", k) + _partition(root, "Testing", k)
    ]
    assert unlisted and len(build_dataset("sun397", root=str(root), split_id=unlisted[0]).splits["test"]) == 6


def test_partition_line_of_unknown_class_is_rejected(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    path = root / "SUN397/Testing_01.txt"
    path.write_bytes(path.read_bytes() + b"\r\n/z/zoo/sun_aaaaaaaaaaaaaaaa.jpg")
    with pytest.raises(DatasetError, match=r"Testing_01.txt:7: '/z/zoo/sun_a+\.jpg' is not an image of a class"):
        build_dataset("sun397", root=str(root))


def test_full_size_index_has_the_published_split_sizes(tmp_path: Path) -> None:
    names = [
        f"{'abcdefghijklmnopqrstuvwxyz'[i % 26]}_scene_{i}" + ("/outdoor" if i % 5 == 0 else "") for i in range(397)
    ]
    folders = [f"{name[0]}/{name}" for name in names]
    root = fixture.build(tmp_path, per_class=100, per_split=50, class_folders=folders, write_images=False)
    data = build_dataset("sun397", root=str(root), split_id=10)
    info = dataset_info("sun397")
    assert {k: len(v) for k, v in data.splits.items()} == info.split_sizes == {"train": 19850, "test": 19850}
    assert len(data.classes) == info.num_classes == 397
    assert np.bincount(data.splits["test"].labels).tolist() == [50] * 397


def test_info() -> None:
    info = dataset_info("sun397")
    assert info.torchvision == "SUN397" and info.resources[0].md5 == "8ca2778205c41d23104230ba66911c7a"
    assert [r.filename for r in info.resources] == ["SUN397.tar.gz", "Partitions.zip"]
    assert inspect.signature(sun397).parameters["split_id"].default == 1  # the config's: test_dataset_configs
