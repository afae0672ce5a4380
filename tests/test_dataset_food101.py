"""Food-101: the official lists without extensions, torchvision's files and labels, 101k files indexed fast."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import food101 as fixture
from tlbench.data import build_dataset, dataset_info
from tlbench.errors import DatasetError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "data")


def test_classes_counts_and_labels(root: Path) -> None:
    data = build_dataset("food101", root=str(root))
    assert data.classes == fixture.SMALL_CLASSES
    assert Path(data.root) == root / "food-101"
    assert data.metric == "top1"
    train, test = data.splits["train"], data.splits["test"]
    assert sorted(data.splits) == ["test", "train"]
    assert np.bincount(train.labels).tolist() == [3, 3, 3, 3]
    assert np.bincount(test.labels).tolist() == [2, 2, 2, 2]
    for samples in (train, test):
        for rel, label in zip(samples.relpaths, samples.labels):
            assert rel.startswith(f"images/{data.classes[label]}/") and rel.endswith(".jpg")
            assert "\r" not in rel
            assert samples.path(samples.relpaths.index(rel)).is_file()
    assert "images/apple_pie/0123456.jpg" in test.relpaths  # id kept as a string
    assert not set(train.relpaths) & set(test.relpaths)


def test_quirk_images_decode_to_rgb(root: Path) -> None:
    train = build_dataset("food101", root=str(root)).splits["train"]
    for quirk in (fixture.GRAYSCALE, fixture.CMYK):
        image = train.load(list(train.relpaths).index(quirk))
        assert image.mode == "RGB" and image.size == (8, 8)


def test_matches_torchvision(root: Path) -> None:
    from torchvision.datasets import Food101

    data = build_dataset("food101", root=str(root))
    for split in ("train", "test"):
        tv = Food101(str(root), split=split, download=False)
        assert tv.classes == data.classes
        samples = data.splits[split]
        ours = sorted((str(samples.path(i)), int(y)) for i, y in enumerate(samples.labels))
        theirs = sorted((str(p), int(y)) for p, y in zip(tv._image_files, tv._labels))
        assert ours == theirs


def test_root_may_be_the_top_folder(root: Path) -> None:
    data = build_dataset("food101", root=str(root / "food-101"))
    assert len(data.splits["train"]) == 12


def test_full_size_lists_give_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "data", full_size=True, with_images=False)
    data = build_dataset("food101", root=str(root))
    info = dataset_info("food101")
    assert {s: len(v) for s, v in data.splits.items()} == info.split_sizes == {"train": 75750, "test": 25250}
    assert len(data.classes) == info.num_classes == 101
    assert set(np.bincount(data.splits["train"].labels)) == {750}
    assert set(np.bincount(data.splits["test"].labels)) == {250}


def test_a_missing_listed_image_is_named(root: Path) -> None:
    (root / "food-101" / fixture.CMYK).unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("food101", root=str(root))
    message = str(err.value)
    assert message.splitlines()[0].endswith(f"is missing {fixture.CMYK}.")
    assert "tlbench-data download food101 --root " in message


@pytest.mark.slow
def test_indexes_101k_files_in_seconds(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "data", full_size=True)
    assert sum(1 for _ in (root / "food-101" / "images" / "dish_100").iterdir()) == 1000
    start = time.perf_counter()
    data = build_dataset("food101", root=str(root))
    elapsed = time.perf_counter() - start
    assert (len(data.splits["train"]), len(data.splits["test"])) == (75750, 25250)
    assert elapsed < 10.0, f"indexing took {elapsed:.1f} s"
    assert data.splits["test"].load(25249).size == (8, 8)


def test_unknown_class_in_list_is_an_error(root: Path) -> None:
    with (root / "food-101" / "meta" / "test.txt").open("a") as out:
        out.write("pizza/1234567\n")
    with pytest.raises(DatasetError, match="pizza/1234567"):
        build_dataset("food101", root=str(root))


def test_missing_root_names_files_and_download(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        build_dataset("food101", root=str(tmp_path / "empty"))
    assert "Food-101" in str(err.value) and "meta" in str(err.value)  # the fix: tests/test_dataset_configs.py


def test_partial_root_names_missing_files(root: Path) -> None:
    (root / "food-101" / "meta" / "test.txt").unlink()
    (root / "food-101" / "images" / "waffles").rename(root / "food-101" / "waffles-moved")
    with pytest.raises(DatasetError) as err:
        build_dataset("food101", root=str(root))
    assert "meta/test.txt" in str(err.value) and "tlbench-data download food101" in str(err.value)
    (root / "food-101" / "meta" / "test.txt").write_text("waffles/1\n")
    with pytest.raises(DatasetError, match="images/waffles"):
        build_dataset("food101", root=str(root))
