"""Oxford-IIIT Pet: images/ + annotations/{trainval,test}.txt, torchvision parity, the archive's odd files."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from fixtures import pets as fixture

from tlbench.data import TransferDataModule, build_dataset, dataset_info
from tlbench.data.datasets.pets import class_name, pets
from tlbench.data.download import extract
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError

# torchvision's names, in CLASS-ID order (title-cased breed words)
EXPECTED_CLASSES = [" ".join(w.title() for w in breed.split("_")) for breed in fixture.BREEDS]


def listing(samples) -> list[tuple[str, int]]:
    return [(str(samples.path(i)), int(samples.labels[i])) for i in range(len(samples))]


@pytest.fixture
def pets_root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "pets")


def read_list(path: Path) -> list[tuple[str, int]]:
    """Independent parse of trainval.txt / test.txt: (image ID, CLASS-ID)."""
    return [(line.split()[0], int(line.split()[1])) for line in path.read_text().splitlines() if line.strip()]


def test_splits_counts_labels_and_classes(pets_root: Path) -> None:
    ds = build_dataset("pets", root=str(pets_root))
    assert ds.name == "pets" and ds.metric == "mean_per_class"
    assert set(ds.splits) == {"train", "test"}
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 74, "test": 74}
    assert ds.classes == EXPECTED_CLASSES and len(ds.classes) == 37
    assert ds.classes[:3] == ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]
    assert ds.classes[-1] == "Yorkshire Terrier"
    for split, list_file in (("train", "trainval.txt"), ("test", "test.txt")):
        samples = ds.splits[split]
        entries = read_list(pets_root / "annotations" / list_file)
        assert samples.relpaths == [f"images/{image_id}.jpg" for image_id, _ in entries]
        assert samples.labels.tolist() == [class_id - 1 for _, class_id in entries]  # 0-based
        assert np.bincount(samples.labels).tolist() == [2] * 37
        for relpath, label in zip(samples.relpaths, samples.labels):
            assert ds.classes[label] == class_name(Path(relpath).stem)  # the breed of the file name
    assert not set(ds.splits["train"].relpaths) & set(ds.splits["test"].relpaths)


def test_stray_and_unlisted_files_are_not_samples(pets_root: Path) -> None:
    ds = build_dataset("pets", root=str(pets_root))
    listed = {p for s in ds.splits.values() for p in s.relpaths}
    assert all((pets_root / "images" / name).is_file() for name in fixture.STRAY_FILES)
    assert not any(p.endswith(".mat") for p in listed)
    assert f"images/{fixture.UNLISTED_IMAGE}" not in listed
    assert len(list((pets_root / "images").iterdir())) == len(listed) + 4


def test_matches_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import OxfordIIITPet

    root = fixture.build(tmp_path / "tv", torchvision_layout=True)
    ds = build_dataset("pets", root=str(root))
    assert ds.root == str(root / "oxford-iiit-pet")
    for ours, split in (("train", "trainval"), ("test", "test")):
        tv = OxfordIIITPet(str(root), split=split, target_types="category", download=False)
        assert ds.classes == tv.classes
        theirs = [(str(p), int(y)) for p, y in zip(tv._images, tv._labels)]
        assert listing(ds.splits[ours]) == theirs
        assert len(theirs) == 74


def test_odd_files_decode_from_content_and_construction_is_lazy(
    pets_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import PIL.Image

    with monkeypatch.context() as patch:
        patch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("building the dataset opened an image"))
        ds = build_dataset("pets", root=str(pets_root))
    formats = {}
    for samples in ds.splits.values():
        for i, relpath in enumerate(samples.relpaths):
            image_id = Path(relpath).stem
            if image_id in fixture.ODD_FILES:
                with PIL.Image.open(samples.path(i)) as raw:
                    formats[image_id] = (raw.mode, raw.format)
                image = samples.load(i)
                assert image.mode == "RGB" and image.size == (16, 16)
    assert set(formats) == set(fixture.ODD_FILES)  # every odd file is listed in a split and decodes
    assert formats["Abyssinian_34"] == ("RGB", "PNG")
    assert formats["Abyssinian_5"] == ("RGBA", "PNG")
    assert formats["Egyptian_Mau_139"][1] == "GIF"
    assert formats["Egyptian_Mau_14"] == ("CMYK", "JPEG")
    assert formats["Egyptian_Mau_145"] == ("L", "JPEG")


def test_verify_lists_a_truncated_jpeg(pets_root: Path) -> None:
    bad = pets_root / "images" / "beagle_1.jpg"
    data = bad.read_bytes()
    assert data[:2] == b"\xff\xd8"
    bad.write_bytes(data[: len(data) // 3])
    report = verify_dataset("pets", pets_root, progress=False)
    assert report.checked_images == 148
    assert len(report.undecodable) == 1 and str(bad) in report.undecodable[0]
    assert not report.ok


def test_list_file_variants(pets_root: Path) -> None:
    """CRLF, no final newline and '#' comment lines (list.txt style) parse the same."""
    reference = build_dataset("pets", root=str(pets_root))
    path = pets_root / "annotations" / "test.txt"
    lines = path.read_text().splitlines()
    path.write_bytes(("#Image CLASS-ID SPECIES BREED ID\r\n" + "\r\n".join(lines)).encode())
    again = build_dataset("pets", root=str(pets_root))
    assert listing(again.splits["test"]) == listing(reference.splits["test"])
    path.write_text("\n".join([*lines[:3], "Abyssinian_1 x 1 1"]))
    with pytest.raises(DatasetError, match=r"test.txt, line 4: expected 'Image CLASS-ID SPECIES BREED-ID'"):
        build_dataset("pets", root=str(pets_root))


def test_inconsistent_class_ids_are_reported(pets_root: Path) -> None:
    path = pets_root / "annotations" / "test.txt"
    path.write_text(path.read_text().replace("american_bulldog_2 2 2 1", "american_bulldog_2 3 2 2"))
    with pytest.raises(DatasetError, match="CLASS-ID 3 is used for both"):
        build_dataset("pets", root=str(pets_root))


def test_missing_root_names_dataset_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("pets", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "Oxford-IIIT Pet (pets)" in message
    assert "annotations/trainval.txt" in message and "images/<Breed>_<n>.jpg" in message


@pytest.mark.parametrize("remove", ["annotations/test.txt", "images", "images/Egyptian_Mau_14.jpg"])
def test_partial_root_names_missing_files(pets_root: Path, remove: str) -> None:
    import shutil

    target = pets_root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("pets", root=str(pets_root))
    assert remove in str(err.value)
    assert "tlbench-data download pets" in str(err.value)


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    ds = build_dataset("pets", root=str(root))
    info = dataset_info("pets")
    assert {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 3680, "test": 3669}
    assert ds.classes == EXPECTED_CLASSES and len(ds.classes) == info.num_classes
    report = verify_dataset("pets", root, decode=False, progress=False)
    assert report.problems == [] and report.split_sizes == info.split_sizes


def test_val_fraction_holdout_is_stratified_and_seeded(pets_root: Path) -> None:
    kwargs = dict(transform=lambda image: image, input_size=(3, 16, 16), root=str(pets_root))
    dm = TransferDataModule("pets", val_fraction=0.5, val_seed=0, **kwargs)
    again = TransferDataModule("pets", val_fraction=0.5, val_seed=0, **kwargs)
    assert dm.split_sizes() == {"train": 37, "val": 37, "test": 74}
    val = dm.dataset.splits["val"]
    assert np.bincount(val.labels).tolist() == [1] * 37
    assert [val.describe(i) for i in range(len(val))] == [
        again.dataset.splits["val"].describe(i) for i in range(len(val))
    ]


def test_published_archives_extract_into_a_loadable_root(tmp_path: Path) -> None:
    downloads = fixture.build_archives(tmp_path / "downloads")
    info = dataset_info("pets")
    assert [r.filename for r in info.resources] == ["images.tar.gz", "annotations.tar.gz"]
    root = tmp_path / "root"
    for resource in info.resources:
        assert resource.extract and resource.md5
        assert (downloads / resource.filename).read_bytes()[:2] != b"\x1f\x8b"  # plain tar, as published
        extract(downloads / resource.filename, root)
    ds = build_dataset("pets", root=str(root))
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 74, "test": 74}


def test_info() -> None:
    info = dataset_info("pets")
    assert info.torchvision == "OxfordIIITPet" and info.num_classes == 37 and info.metric == "mean_per_class"
    assert set(inspect.signature(pets).parameters) == {"root"}  # the config sets no other builder key
