"""Stanford Dogs: .mat split lists (cells of strings, 1-based double labels), PNG saved as .jpg, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import stanford_dogs as fixture
from scipy.io import loadmat

from tlbench.data import build_dataset, dataset_info
from tlbench.data.samples import FileSamples
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError


def listing(samples: FileSamples) -> list[tuple[str, int]]:
    return [(str(samples.relpaths[i]), int(samples.labels[i])) for i in range(len(samples))]


def expected(files_of: dict[str, list[str]]) -> list[tuple[str, int]]:
    return [(f"{name}/{f}", label) for label, name in enumerate(fixture.CLASSES) for f in files_of[name]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "dogs")


def test_fixture_mat_files_have_the_real_structure(root: Path) -> None:
    raw = loadmat(str(root / "train_list.mat"))
    assert raw["file_list"].shape == (9, 1) and raw["file_list"].dtype == object
    assert raw["file_list"][0, 0][0] == "n02085620-Chihuahua/n02085620_10074.jpg"
    assert raw["annotation_list"][0, 0][0] == "n02085620-Chihuahua/n02085620_10074"
    assert raw["labels"].shape == (9, 1) and raw["labels"].dtype == np.float64 and raw["labels"].min() == 1


def test_splits_labels_and_classes(root: Path) -> None:
    ds = build_dataset("stanford_dogs", root=str(root))
    assert ds.name == "stanford_dogs" and ds.metric == "top1"
    assert ds.classes == fixture.CLASSES  # folder names, in label order
    assert ds.root == str(root)
    assert listing(ds.splits["train"]) == expected(fixture.TRAIN)
    assert listing(ds.splits["test"]) == expected(fixture.TEST)
    for samples in ds.splits.values():
        assert samples.labels.dtype == np.int64 and samples.labels.min() == 0 and samples.labels.max() == 2
        for i in range(len(samples)):
            assert samples.path(i).is_file()
            assert ds.classes[samples.labels[i]] == samples.path(i).parent.name


def test_png_saved_as_jpg_and_grayscale_decode(root: Path) -> None:
    ds = build_dataset("stanford_dogs", root=str(root))
    train = list(ds.splits["train"].relpaths)
    assert (root / "Images" / fixture.PNG_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for relpath in (fixture.PNG_FILE, fixture.GRAYSCALE_FILE):
        image = ds.splits["train"].load(train.index(relpath))
        assert image.mode == "RGB" and image.size == (16, 16)
    # the PNG keeps its class colour (blue-ish) after the RGBA -> RGB conversion
    mean = np.asarray(ds.splits["train"].load(train.index(fixture.PNG_FILE))).reshape(-1, 3).mean(0)
    assert mean[2] > 150 and mean[0] < 90
    report = verify_dataset("stanford_dogs", root, progress=False)
    assert report.checked_images == 15 and report.undecodable == []
    # the fixture's .mat files are not the published ones: verify says so via the split-file checksums
    assert any("train_list.mat" in p and "md5" in p for p in report.problems)


def test_single_item_split_survives_squeeze(root: Path) -> None:
    """loadmat(squeeze_me=True) turns a one-element cell into a bare str and labels into a scalar."""
    fixture.write_list(root / "test_list.mat", ["n02085620-Chihuahua/n02085620_10976.jpg"], [1])
    ds = build_dataset("stanford_dogs", root=str(root))
    assert listing(ds.splits["test"]) == [("n02085620-Chihuahua/n02085620_10976.jpg", 0)]


def test_missing_and_partial_root(tmp_path: Path, root: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_dogs", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "Stanford Dogs" in message and "train_list.mat" in message  # the fix: tests/test_dataset_configs.py

    (root / "test_list.mat").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_dogs", root=str(root))
    assert "test_list.mat" in str(err.value).split("Expected")[0]

    fixture.build(root)
    (root / "Images" / fixture.PNG_FILE).unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_dogs", root=str(root))
    assert f"Images/{fixture.PNG_FILE}" in str(err.value).split("Expected")[0]


def test_inconsistent_lists_are_rejected(root: Path) -> None:
    files = ["n02085620-Chihuahua/n02085620_10074.jpg", "n02085782-Japanese_spaniel/n02085782_1039.jpg"]
    fixture.write_list(root / "train_list.mat", files, [1, 1])  # one label, two breed folders
    with pytest.raises(DatasetError, match="several breed folders"):
        build_dataset("stanford_dogs", root=str(root))
    fixture.write_list(root / "train_list.mat", files, [0, 1])  # 0 is not a 1-based label
    with pytest.raises(DatasetError, match="integer labels from 1"):
        build_dataset("stanford_dogs", root=str(root))


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    info = dataset_info("stanford_dogs")
    ds = build_dataset("stanford_dogs", root=str(root))  # lazy: empty image files are never opened
    assert {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 12000, "test": 8580}
    assert len(ds.classes) == info.num_classes == 120
    assert ds.classes == sorted(ds.classes)  # label order is the sorted folder order
    assert (np.bincount(ds.splits["train"].labels, minlength=120) == 100).all()


def test_info() -> None:
    info = dataset_info("stanford_dogs")
    assert info.metric == "top1" and info.torchvision is None
    assert {r.filename: r.md5 for r in info.resources} == {
        "images.tar": "1bb1f2a596ae7057f99d7d75860002ef",
        "lists.tar": "edbb9f16854ec66506b5f09b583e0656",
    }
    assert set(info.checksums) == {"train_list.mat", "test_list.mat"}
