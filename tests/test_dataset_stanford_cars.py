"""Stanford Cars: the devkit .mat layout, 0-based labels, torchvision's StanfordCars on the same fixture."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from tests.fixtures import stanford_cars as fixture
from tlbench.data import build_dataset, dataset_info
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError


@pytest.fixture(scope="module")
def cars_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixture.build(tmp_path_factory.mktemp("cars"))


def test_counts_labels_and_classes(cars_root: Path) -> None:
    data = build_dataset("stanford_cars", root=str(cars_root))
    assert data.classes == fixture.CLASS_NAMES  # cars_meta.mat order, slash kept
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 9, "test": 6}
    assert data.metric == "top1"
    assert Path(data.root) == cars_root / "stanford_cars"
    for split, folder in (("train", "cars_train"), ("test", "cars_test")):
        samples = data.splits[split]
        assert samples.labels.min() == 0 and samples.labels.max() == 2  # 1-based on disk
        assert np.bincount(samples.labels).tolist() == ([3, 3, 3] if split == "train" else [2, 2, 2])
        assert all(p.startswith(f"{folder}/") and p.endswith(".jpg") for p in samples.relpaths)


def test_labels_follow_the_annotations_not_the_file_order(cars_root: Path) -> None:
    from scipy.io import loadmat

    annos = loadmat(cars_root / "stanford_cars/devkit/cars_train_annos.mat")["annotations"][0]
    expected = {str(a["fname"][0]): int(a["class"][0, 0]) - 1 for a in annos}
    samples = build_dataset("stanford_cars", root=str(cars_root)).splits["train"]
    got = {p.split("/")[1]: int(label) for p, label in zip(samples.relpaths, samples.labels)}
    assert got == expected
    assert len(set(expected.values())) == 3 and list(expected.values()) != sorted(expected.values())


def test_root_may_be_the_stanford_cars_folder_itself(cars_root: Path) -> None:
    a = build_dataset("stanford_cars", root=str(cars_root))
    b = build_dataset("stanford_cars", root=str(cars_root / "stanford_cars"))
    assert a.splits["test"].relpaths == b.splits["test"].relpaths and a.root == b.root


def test_matches_torchvision(cars_root: Path) -> None:
    from torchvision.datasets import StanfordCars

    data = build_dataset("stanford_cars", root=str(cars_root))
    for split in ("train", "test"):
        tv = StanfordCars(str(cars_root), split=split, download=False)
        assert len(tv) == len(data.splits[split])
        ours = [(str(data.splits[split].path(i)), int(data.splits[split].labels[i])) for i in range(len(tv))]
        assert ours == [(str(Path(p)), int(t)) for p, t in tv._samples]
        assert tv.classes == data.classes


def test_grayscale_and_cmyk_jpegs_decode_to_rgb(cars_root: Path) -> None:
    from PIL import Image

    data = build_dataset("stanford_cars", root=str(cars_root))
    modes = {}
    for samples in data.splits.values():
        for i in range(len(samples)):
            with Image.open(samples.path(i)) as raw:
                modes[raw.mode] = modes.get(raw.mode, 0) + 1
            image = samples.load(i)
            assert image.mode == "RGB" and image.size == (16, 16)
    assert modes.get("L") == 1 and modes.get("CMYK") == 1


def test_missing_root_names_files_and_instructions(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_cars", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "Stanford Cars (stanford_cars)" in message and "devkit/cars_meta.mat" in message
    assert "pytorch/vision#7545" in message and "cars_test_annos_withlabels.mat" in message


def test_partial_root_names_the_missing_files(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    shutil.rmtree(root / "stanford_cars/cars_test")
    (root / "stanford_cars/cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_cars", root=str(root))
    message = str(err.value)
    first_line = message.splitlines()[0]
    assert first_line.endswith("is missing cars_test_annos_withlabels.mat, cars_test.")
    assert "tlbench-data verify stanford_cars" in message


def test_annotations_without_class_are_rejected(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    shutil.copy(
        root / "stanford_cars/devkit/cars_test_annos.mat", root / "stanford_cars/cars_test_annos_withlabels.mat"
    )
    with pytest.raises(DatasetError, match="fname and class"):
        build_dataset("stanford_cars", root=str(root))


def test_class_ids_out_of_range_are_rejected(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    annos = fixture.annotations_struct(["00001.jpg", "00002.jpg"], [1, 4])
    savemat(root / "stanford_cars/devkit/cars_train_annos.mat", {"annotations": annos})
    with pytest.raises(DatasetError, match=r"outside 1\.\.3"):
        build_dataset("stanford_cars", root=str(root))


def test_a_missing_listed_image_is_named(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    (root / "stanford_cars/cars_test/00004.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("stanford_cars", root=str(root))
    message = str(err.value)
    assert message.splitlines()[0].endswith("is missing cars_test/00004.jpg.")
    assert "tlbench-data verify stanford_cars --root " in message


def test_full_size_index_has_the_published_split_sizes(tmp_path: Path) -> None:
    # 196 classes, 41-42 images per class in each split; the images are links to one empty file (none is opened).
    train = [42] * 108 + [41] * 88
    test = [42] * 5 + [41] * 191
    names = [f"Make Model {i} 20{i % 13:02d}" for i in range(196)]
    root = fixture.build(tmp_path, per_class={"train": train, "test": test}, class_names=names, write_images=False)
    data = build_dataset("stanford_cars", root=str(root))
    info = dataset_info("stanford_cars")
    assert {k: len(v) for k, v in data.splits.items()} == info.split_sizes == {"train": 8144, "test": 8041}
    assert len(data.classes) == info.num_classes == 196
    assert np.bincount(data.splits["test"].labels).tolist() == test


def test_info_and_verify_checksum(cars_root: Path) -> None:
    info = dataset_info("stanford_cars")
    assert info.torchvision == "StanfordCars" and not info.resources and info.instructions
    report = verify_dataset("stanford_cars", str(cars_root), progress=False)
    assert report.checked_images == 15 and not report.undecodable
    # the fixture's test annotations are not the published file, and it is far smaller
    assert any("differs from the published one" in p for p in report.problems)
    assert any("split train: 9 images, expected 8144" in p for p in report.problems)
