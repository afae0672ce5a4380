"""MIT Indoor 67: the official lists, odd names, content-sniffed GIFs, case-insensitive matching, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import mit67 as fixture

from tlbench.data import build_dataset, dataset_info
from tlbench.data.samples import FileSamples
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError


def listing(samples: FileSamples) -> list[tuple[str, int]]:
    return [(str(samples.relpaths[i]), int(samples.labels[i])) for i in range(len(samples))]


def expected(split: int) -> list[tuple[str, int]]:
    listed_as, on_disk = fixture.CASE_MISMATCH
    rows = []
    for label, name in enumerate(fixture.CLASSES):
        for f in fixture.SPLITS[name][split]:
            relpath = f"{name}/{f}"
            rows.append((on_disk if relpath == listed_as else relpath, label))
    return rows


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "mit67")


def test_splits_labels_and_classes(root: Path) -> None:
    ds = build_dataset("mit67", root=str(root))
    assert ds.name == "mit67" and ds.metric == "top1"
    assert ds.classes == fixture.CLASSES  # sorted folder names
    assert set(ds.splits) == {"train", "test"}
    assert (len(ds.splits["train"]), len(ds.splits["test"])) == (18, 8)
    # list order kept; label = index of the first path component in the sorted classes
    assert listing(ds.splits["train"]) == expected(0)
    assert listing(ds.splits["test"]) == expected(1)
    for samples in ds.splits.values():
        assert samples.labels.dtype == np.int64 and samples.labels.min() == 0
        assert samples.root == root / "Images"
        for i in range(len(samples)):
            assert samples.path(i).is_file()
            assert ds.classes[samples.labels[i]] == samples.path(i).parent.name
    assert ds.root == str(root)
    # images on disk that no list names are not part of any split
    every = {p for s in ds.splits.values() for p, _ in listing(s)}
    assert not every & set(fixture.UNLISTED)
    assert (root / "Images" / fixture.UNLISTED[0]).is_file()


def test_odd_names_and_quirk_files_decode(root: Path) -> None:
    ds = build_dataset("mit67", root=str(root))
    where = {p: (split, i) for split, s in ds.splits.items() for i, (p, _) in enumerate(listing(s))}
    odd = [
        "mall/shopping mall.jpg",
        "garage/Garage inside.jpg",
        "concert_hall/Concert Hall.jpg",
        "nursery/baby's_room.jpg.jpg",
        "grocerystore/aislesjpg.jpg",
        fixture.GRAYSCALE_FILE,
        fixture.CMYK_FILE,
        *fixture.GIF_FILES,
    ]
    for relpath in odd:
        split, i = where[relpath]
        image = ds.splits[split].load(i)
        assert image.mode == "RGB" and image.size == (16, 16), relpath
    for relpath in fixture.GIF_FILES:
        assert (root / "Images" / relpath).read_bytes()[:4] == b"GIF8"  # GIF data under a .jpg name
    # colour survives decoding: the GIF of winecellar is dominated by its class colour (cyan-ish: low red)
    split, i = where["winecellar/wine_cellar_floor_stone_gif.jpg"]
    mean = np.asarray(ds.splits[split].load(i)).reshape(-1, 3).mean(0)
    assert mean[0] < 90 and mean[1] > 150 and mean[2] > 150


def test_case_mismatch_matched_to_file_on_disk(root: Path) -> None:
    listed_as, on_disk = fixture.CASE_MISMATCH
    assert listed_as in (root / "TrainImages.txt").read_text().split("\n")
    assert not (root / "Images" / listed_as).exists() or (root / "Images" / listed_as).samefile(
        root / "Images" / on_disk
    )
    ds = build_dataset("mit67", root=str(root))
    relpaths = list(ds.splits["train"].relpaths)
    assert on_disk in relpaths
    i = relpaths.index(on_disk)
    assert ds.splits["train"].load(i).mode == "RGB"
    assert ds.classes[ds.splits["train"].labels[i]] == "garage"


@pytest.mark.parametrize(("crlf", "trailing_newline"), [(True, False), (False, True), (True, True)])
def test_line_endings_do_not_matter(tmp_path: Path, crlf: bool, trailing_newline: bool) -> None:
    plain = build_dataset("mit67", root=str(fixture.build(tmp_path / "plain")))
    other_root = fixture.build(tmp_path / "other", crlf=crlf, trailing_newline=trailing_newline)
    assert (b"\r\n" in (other_root / "TestImages.txt").read_bytes()) == crlf
    other = build_dataset("mit67", root=str(other_root))
    for split in ("train", "test"):
        assert listing(other.splits[split]) == listing(plain.splits[split])


def test_root_may_be_the_images_folder_or_a_parent(root: Path, tmp_path: Path) -> None:
    reference = build_dataset("mit67", root=str(root))
    from_images = build_dataset("mit67", root=str(root / "Images"))
    assert from_images.root == str(root)
    assert listing(from_images.splits["test"]) == listing(reference.splits["test"])
    # ROOT holding a mit67/ folder
    from_parent = build_dataset("mit67", root=str(root.parent))
    assert from_parent.root == str(root)


def test_missing_root_names_files_and_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("mit67", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "MIT Indoor 67" in message and "Images/" in message and "TrainImages.txt" in message


def test_partial_root_names_missing_list_and_images(root: Path) -> None:
    (root / "TestImages.txt").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("mit67", root=str(root))
    assert "TestImages.txt" in str(err.value) and "TrainImages.txt" not in str(err.value).split("Expected")[0]

    fixture.build(root)  # restore, then remove images
    (root / "Images" / "mall" / "shopping mall.jpg").unlink()
    (root / "Images" / "nursery" / "baby's_room.jpg.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("mit67", root=str(root))
    missing_part = str(err.value).split("Expected")[0]
    assert "Images/mall/shopping mall.jpg" in missing_part
    assert "Images/nursery/baby's_room.jpg.jpg" in missing_part
    assert "tlbench-data download mit67" in str(err.value)


def test_overlapping_or_malformed_lists_are_rejected(root: Path) -> None:
    test_list = root / "TestImages.txt"
    original = test_list.read_text()
    test_list.write_text(original + "\nmall/mall_01.jpg")  # also in train
    with pytest.raises(DatasetError, match="both split lists"):
        build_dataset("mit67", root=str(root))
    test_list.write_text(original + "\nno_class_folder.jpg")
    with pytest.raises(DatasetError, match="<class>/<file>"):
        build_dataset("mit67", root=str(root))


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    info = dataset_info("mit67")
    ds = build_dataset("mit67", root=str(root))  # lazy: the images are empty files, never opened here
    assert {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 5360, "test": 1340}
    assert ds.classes == fixture.ALL_CLASSES and len(ds.classes) == info.num_classes == 67
    train, test = (np.bincount(ds.splits[s].labels, minlength=67) for s in ("train", "test"))
    assert train.min() == 77 and train.max() == 83 and test.min() == 17 and test.max() == 23
    assert ((train + test) == 100).all()
    report = verify_dataset("mit67", root, decode=False, progress=False)
    assert report.ok, report.problems


def test_verify_decodes_every_fixture_image(root: Path) -> None:
    report = verify_dataset("mit67", root, progress=False)
    assert report.checked_images == 26 and report.undecodable == []
    assert any("expected 5360" in p for p in report.problems)  # the tiny fixture is not the published size


def test_info() -> None:
    info = dataset_info("mit67")
    assert info.metric == "top1" and info.torchvision is None
    assert {r.filename for r in info.resources} == {"indoorCVPR_09.tar", "TrainImages.txt", "TestImages.txt"}
    assert [r.extract for r in info.resources] == [True, False, False]
