"""CUB-200-2011: ID-keyed index files (shuffled line order), 1-based labels, nested or direct root, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import cub200 as fixture

from tlbench.data import build_dataset, dataset_info
from tlbench.data.samples import FileSamples
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError


def listing(samples: FileSamples) -> list[tuple[str, int]]:
    return [(str(samples.relpaths[i]), int(samples.labels[i])) for i in range(len(samples))]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "cub")


def test_splits_follow_ids_not_line_order(root: Path) -> None:
    base = root / "CUB_200_2011"
    # the fixture really shuffles the ID-keyed files: zipping them by line order would be wrong
    first_ids = [line.split()[0] for line in (base / "images.txt").read_text().splitlines()[:6]]
    shuffled_ids = [line.split()[0] for line in (base / "train_test_split.txt").read_text().splitlines()[:6]]
    assert first_ids != shuffled_ids

    ds = build_dataset("cub200", root=str(root))
    assert ds.name == "cub200" and ds.metric == "top1"
    assert ds.classes == fixture.CLASSES  # classes.txt names, class-ID order
    assert ds.root == str(base)
    rows = fixture.expected()
    assert listing(ds.splits["train"]) == [(p, c) for p, c, flag in rows if flag == 1]
    assert listing(ds.splits["test"]) == [(p, c) for p, c, flag in rows if flag == 0]
    assert (len(ds.splits["train"]), len(ds.splits["test"])) == (12, 8)
    for split, samples in ds.splits.items():
        assert samples.labels.dtype == np.int64
        assert sorted(set(samples.labels.tolist())) == [0, 1, 2, 3], split  # 0-based, every class
        assert np.bincount(samples.labels).tolist() == [3 if split == "train" else 2] * 4
        for i in range(len(samples)):
            assert samples.path(i).is_file()
            assert ds.classes[samples.labels[i]] == samples.path(i).parent.name  # label agrees with folder


def test_every_image_decodes_including_grayscale_and_cmyk(root: Path) -> None:
    ds = build_dataset("cub200", root=str(root))
    quirky = {fixture.GRAYSCALE_ID: "L", fixture.CMYK_ID: "CMYK"}
    rows = fixture.expected()
    from PIL import Image

    for image_id, mode in quirky.items():
        relpath, _, flag = rows[image_id - 1]
        with Image.open(root / "CUB_200_2011" / "images" / relpath) as raw:
            assert raw.mode == mode
        samples = ds.splits["train" if flag else "test"]
        image = samples.load(list(samples.relpaths).index(relpath))
        assert image.mode == "RGB" and image.size == (16, 16)
    report = verify_dataset("cub200", root, progress=False)
    assert report.checked_images == 20 and report.undecodable == []


def test_root_nested_or_direct_and_line_endings(tmp_path: Path) -> None:
    nested = build_dataset("cub200", root=str(fixture.build(tmp_path / "a")))
    direct_root = fixture.build(tmp_path / "b", nested=False, crlf=True, trailing_newline=False)
    assert direct_root.name == "CUB_200_2011"
    assert b"\r\n" in (direct_root / "images.txt").read_bytes()
    direct = build_dataset("cub200", root=str(direct_root))
    assert direct.root == str(direct_root)
    assert direct.classes == nested.classes
    for split in ("train", "test"):
        assert listing(direct.splits[split]) == listing(nested.splits[split])


def test_missing_and_partial_root(tmp_path: Path, root: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("cub200", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "CUB-200-2011" in message and "images.txt" in message  # the fix: tests/test_dataset_configs.py

    base = root / "CUB_200_2011"
    (base / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("cub200", root=str(root))
    assert "train_test_split.txt" in str(err.value).split("Expected")[0]

    fixture.build(root)
    relpath = fixture.expected()[4][0]
    (base / "images" / relpath).unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("cub200", root=str(root))
    assert f"images/{relpath}" in str(err.value).split("Expected")[0]
    assert "tlbench-data download cub200" in str(err.value)


def test_inconsistent_index_files_are_rejected(root: Path) -> None:
    base = root / "CUB_200_2011"
    split_file = base / "train_test_split.txt"
    lines = split_file.read_text().splitlines()
    split_file.write_text("\n".join(line for line in lines if not line.startswith("5 ")))
    with pytest.raises(DatasetError, match=r"no line for image ids \[5\]"):
        build_dataset("cub200", root=str(root))
    split_file.write_text("\n".join([*lines, "21 2"]))
    with pytest.raises(DatasetError, match="outside"):
        build_dataset("cub200", root=str(root))
    split_file.write_text("\n".join(lines))
    labels_file = base / "image_class_labels.txt"
    labels_file.write_text("\n".join(f"{line.split()[0]} 9" for line in labels_file.read_text().splitlines()))
    with pytest.raises(DatasetError, match="class id not in"):
        build_dataset("cub200", root=str(root))


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    info = dataset_info("cub200")
    ds = build_dataset("cub200", root=str(root))  # lazy: empty image files are never opened
    assert {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 5994, "test": 5794}
    assert len(ds.classes) == info.num_classes == 200
    assert ds.classes[0] == "001.Bird_001" and ds.classes[-1] == "200.Bird_200"
    assert np.bincount(ds.splits["train"].labels, minlength=200).tolist() == [c[0] for c in fixture.full_size_counts()]
    report = verify_dataset("cub200", root, decode=False, progress=False)
    assert report.ok, report.problems


def test_info() -> None:
    info = dataset_info("cub200")
    assert info.metric == "top1" and info.num_classes == 200 and info.torchvision is None
    assert info.resources[0].filename == "CUB_200_2011.tgz"
    assert info.resources[0].md5 == "97eceeb196236b17998738112f37df78"
