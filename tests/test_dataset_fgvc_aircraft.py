"""FGVC-Aircraft 2013b: official splits at three annotation levels, the banner crop, torchvision's
FGVCAircraft on the same fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import fgvc_aircraft as fixture
from tlbench.data import build_dataset, dataset_info
from tlbench.errors import ConfigError, DatasetError

LEVEL_CLASSES = {
    "variant": list(fixture.VARIANTS),
    "family": ["Boeing 707", "A300", "Cessna 172", "DHC-1", "F/A-18"],
    "manufacturer": ["Boeing", "Airbus", "Cessna", "de Havilland", "McDonnell Douglas"],
}


@pytest.fixture(scope="module")
def aircraft_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixture.build(tmp_path_factory.mktemp("aircraft"))


def _listing(samples) -> list[tuple[str, int]]:
    return [(str(samples.path(i)), int(samples.labels[i])) for i in range(len(samples))]


def test_official_splits_counts_and_classes(aircraft_root: Path) -> None:
    data = build_dataset("fgvc_aircraft", root=str(aircraft_root))
    assert data.classes == LEVEL_CLASSES["variant"]  # variants.txt order; spaces and slashes kept
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 10, "val": 10, "test": 10}
    assert data.metric == "mean_per_class"
    assert Path(data.root) == aircraft_root / "fgvc-aircraft-2013b"
    for samples in data.splits.values():
        assert np.bincount(samples.labels).tolist() == [2] * 5  # 0-based, every class
    seen = [p for s in data.splits.values() for p in s.relpaths]
    assert len(seen) == len(set(seen)) and all(p.startswith("data/images/00") for p in seen)  # 7-digit ids kept


def test_labels_come_from_the_list_line_not_its_position(aircraft_root: Path) -> None:
    data = build_dataset("fgvc_aircraft", root=str(aircraft_root))
    lines = (aircraft_root / "fgvc-aircraft-2013b/data/images_variant_test.txt").read_text().splitlines()
    expected = {line.split(" ", 1)[0]: LEVEL_CLASSES["variant"].index(line.split(" ", 1)[1]) for line in lines}
    samples = data.splits["test"]
    got = {Path(p).stem: int(label) for p, label in zip(samples.relpaths, samples.labels)}
    assert got == expected and list(samples.labels) != sorted(samples.labels)


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_matches_torchvision_for_every_split_and_level(aircraft_root: Path, level: str) -> None:
    from torchvision.datasets import FGVCAircraft

    official = build_dataset("fgvc_aircraft", root=str(aircraft_root), annotation_level=level)
    merged = build_dataset("fgvc_aircraft", root=str(aircraft_root), annotation_level=level, trainval=True)
    assert official.classes == LEVEL_CLASSES[level]
    assert set(merged.splits) == {"train", "test"}
    ours = {**official.splits, "trainval": merged.splits["train"]}
    for split in ("train", "val", "trainval", "test"):
        tv = FGVCAircraft(str(aircraft_root), split=split, annotation_level=level, download=False)
        assert tv.classes == official.classes
        assert _listing(ours[split]) == [(str(Path(f)), int(t)) for f, t in zip(tv._image_files, tv._labels)]


def test_crlf_lists_without_final_newline(tmp_path: Path, aircraft_root: Path) -> None:
    root = fixture.build(tmp_path, newline="\r\n", final_newline=False, write_images=False)
    crlf = build_dataset("fgvc_aircraft", root=str(root), annotation_level="manufacturer")
    lf = build_dataset("fgvc_aircraft", root=str(aircraft_root), annotation_level="manufacturer")
    assert crlf.classes == lf.classes == LEVEL_CLASSES["manufacturer"]
    for split in ("train", "val", "test"):
        assert crlf.splits[split].relpaths == lf.splits[split].relpaths
        assert crlf.splits[split].labels.tolist() == lf.splits[split].labels.tolist()


def test_banner_is_cropped_by_default(aircraft_root: Path) -> None:
    from torchvision.datasets import FGVCAircraft

    cropped = build_dataset("fgvc_aircraft", root=str(aircraft_root)).splits["train"]
    whole = build_dataset("fgvc_aircraft", root=str(aircraft_root), crop_banner=False).splits["train"]
    tv = FGVCAircraft(str(aircraft_root), split="train", download=False)
    assert tv[0][0].size == whole.load(0).size == (16, 36)  # torchvision keeps the banner
    image = np.asarray(cropped.load(0))
    assert image.shape == (16, 16, 3) and image[-1].mean() < 240  # the white banner is gone
    assert np.asarray(whole.load(0))[-1].mean() > 245
    assert cropped.fingerprint() != whole.fingerprint()


def test_grayscale_and_cmyk_decode(aircraft_root: Path) -> None:
    from PIL import Image

    data = build_dataset("fgvc_aircraft", root=str(aircraft_root), trainval=True)
    modes = []
    for samples in data.splits.values():
        for i in range(len(samples)):
            with Image.open(samples.path(i)) as raw:
                modes.append(raw.mode)
            assert samples.load(i).mode == "RGB"
    assert modes.count("L") == 1 and modes.count("CMYK") == 1


def test_bad_level_and_unknown_label(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    with pytest.raises(ConfigError, match="annotation_level"):
        build_dataset("fgvc_aircraft", root=str(root), annotation_level="model")
    split_file = root / "fgvc-aircraft-2013b/data/images_family_val.txt"
    split_file.write_text(split_file.read_text() + "0099999 Boeing 999\n")
    with pytest.raises(DatasetError, match=r"images_family_val.txt:11: label 'Boeing 999'"):
        build_dataset("fgvc_aircraft", root=str(root), annotation_level="family")


def test_missing_root_names_files_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("fgvc_aircraft", root=str(tmp_path))
    message = str(err.value)
    assert "FGVC-Aircraft 2013b (fgvc_aircraft)" in message and "data/images" in message


def test_partial_root_names_the_missing_files(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    (root / "fgvc-aircraft-2013b/data/images_variant_test.txt").unlink()
    (root / "fgvc-aircraft-2013b/data/variants.txt").unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("fgvc_aircraft", root=str(root / "fgvc-aircraft-2013b"))
    first_line = str(err.value).splitlines()[0]
    assert first_line.endswith("is missing data/variants.txt, data/images_variant_test.txt.")
    assert "tlbench-data download fgvc_aircraft" in str(err.value)
    # the other levels are still complete
    assert len(build_dataset("fgvc_aircraft", root=str(root), annotation_level="family").splits["test"]) == 10


def test_a_missing_listed_image_is_named(tmp_path: Path) -> None:
    root = fixture.build(tmp_path, write_images=False)
    base = root / "fgvc-aircraft-2013b"
    relpath = build_dataset("fgvc_aircraft", root=str(root)).splits["val"].relpaths[3]
    (base / relpath).unlink()
    for level in ("variant", "family", "manufacturer"):  # every level lists it
        with pytest.raises(DatasetError) as err:
            build_dataset("fgvc_aircraft", root=str(root), annotation_level=level)
        message = str(err.value)
        assert message.splitlines()[0].endswith(f"is missing {relpath}.")
        assert "tlbench-data download fgvc_aircraft --root " in message


def test_full_size_index_has_the_published_split_sizes(tmp_path: Path) -> None:
    variants = {f"Variant {i}/{i % 7}": (f"Family {i // 2}", f"Maker {i // 4}") for i in range(100)}
    per_class = {"train": 34, "val": 34, "test": 34}
    root = fixture.build(tmp_path, per_class=per_class, variants=variants, write_images=False)
    data_dir = root / "fgvc-aircraft-2013b/data"
    # trim to the published 3,334 / 3,333 / 3,333: 34 classes keep 34 train images, 33 keep 34 val/test images
    keep = {"train": 34, "val": 33, "test": 33}
    for split, extra in keep.items():
        path = data_dir / f"images_variant_{split}.txt"
        lines = path.read_text().splitlines()
        count: dict[str, int] = {}
        kept = []
        for line in lines:
            variant = line.split(" ", 1)[1]
            count[variant] = count.get(variant, 0) + 1
            if count[variant] <= 33 or list(variants).index(variant) < extra:
                kept.append(line)
        path.write_text("\n".join(kept) + "\n")
    data = build_dataset("fgvc_aircraft", root=str(root))
    info = dataset_info("fgvc_aircraft")
    assert {k: len(v) for k, v in data.splits.items()} == info.split_sizes == {"train": 3334, "val": 3333, "test": 3333}
    assert len(data.classes) == info.num_classes == 100


def test_info() -> None:
    info = dataset_info("fgvc_aircraft")
    assert info.torchvision == "FGVCAircraft" and info.resources[0].url.endswith("fgvc-aircraft-2013b.tar.gz")
    assert info.resources[0].md5 == "d4acdd33327262359767eeaa97a4f732"
