"""Wood knots (Knots6): both accepted layouts, stratified folds written to a split file, HPAI's split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import knots as fixture
from tlbench.data import build_dataset, dataset_info
from tlbench.data.datasets.knots import CLASSES, assign_folds
from tlbench.errors import ConfigError, DatasetError


@pytest.fixture(autouse=True)
def split_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "split-cache"
    monkeypatch.setenv("TLBENCH_SPLIT_DIR", str(folder))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "data")


def per_class(samples) -> list[int]:
    return np.bincount(samples.labels, minlength=6).tolist()


def test_classes_counts_and_labels(root: Path) -> None:
    data = build_dataset("knots", root=str(root))
    assert data.classes == sorted(fixture.SMALL_COUNTS) == CLASSES
    assert Path(data.root) == root / "wood"
    train, test = data.splits["train"], data.splits["test"]
    total = [a + b for a, b in zip(per_class(train), per_class(test))]
    assert total == [fixture.SMALL_COUNTS[c] for c in CLASSES]
    for samples in (train, test):
        for rel, label in zip(samples.relpaths, samples.labels):
            assert rel.split("/")[0] == data.classes[label] and rel.endswith(".jpg")
    assert not set(train.relpaths) & set(test.relpaths)
    assert all("Thumbs.db" not in p for p in train.relpaths)


def test_folds_partition_the_data_stratified(root: Path) -> None:
    tests = [build_dataset("knots", root=str(root), split_id=i).splits["test"] for i in range(5)]
    pooled = [p for t in tests for p in t.relpaths]
    assert len(pooled) == len(set(pooled)) == sum(fixture.SMALL_COUNTS.values())  # disjoint, covering
    for c in range(6):
        sizes = [int((t.labels == c).sum()) for t in tests]
        assert max(sizes) - min(sizes) <= 1  # stratified
    sizes = [len(t) for t in tests]
    assert max(sizes) - min(sizes) <= 1
    # only one split file for all five folds
    assert [p.name for p in (root / "wood" / "tlbench_splits").iterdir()] == ["knots_5fold_seed0.txt"]


def test_split_file_reused_and_seeded(root: Path) -> None:
    first = build_dataset("knots", root=str(root), split_id=2)
    path = root / "wood" / "tlbench_splits" / "knots_5fold_seed0.txt"
    text = path.read_bytes()
    path.unlink()
    redrawn = build_dataset("knots", root=str(root), split_id=2)
    assert path.read_bytes() == text  # the same seed draws the same bytes again
    assert list(redrawn.splits["test"].relpaths) == list(first.splits["test"].relpaths)
    other = build_dataset("knots", root=str(root), split_id=2, fold_seed=1)
    assert list(other.splits["test"].relpaths) != list(first.splits["test"].relpaths)
    assert (path.parent / "knots_5fold_seed1.txt").is_file()
    # an existing file wins over the seed
    lines = text.decode().splitlines()
    moved = next(line for line in lines if line.startswith("fold2\t")).split("\t")[1]
    path.write_text("\n".join(line.replace(f"fold2\t{moved}", f"fold0\t{moved}") for line in lines) + "\n")
    edited = build_dataset("knots", root=str(root), split_id=2)
    assert moved not in edited.splits["test"].relpaths and moved in edited.splits["train"].relpaths


def test_assign_folds_is_deterministic_and_balanced() -> None:
    labels = np.repeat(np.arange(6), [179, 69, 65, 47, 35, 29])
    folds = assign_folds(labels, 5, 0)
    assert np.array_equal(folds, assign_folds(labels, 5, 0))
    assert not np.array_equal(folds, assign_folds(labels, 5, 1))
    assert np.bincount(folds).tolist() == [85, 85, 85, 85, 84]


def test_full_size_gives_published_counts(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    data = build_dataset("knots", root=str(root))
    info = dataset_info("knots")
    assert {s: len(v) for s, v in data.splits.items()} == info.split_sizes == {"train": 339, "test": 85}
    assert len(data.classes) == info.num_classes
    totals = [a + b for a, b in zip(per_class(data.splits["train"]), per_class(data.splits["test"]))]
    assert totals == [fixture.FULL_COUNTS[c] for c in CLASSES] and sum(totals) == 424


def test_hpai_layout_pooled_folds_and_fixed_split(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", layout="hpai", full_size=True)
    hpai = build_dataset("knots", root=str(root), protocol="hpai")
    assert (len(hpai.splits["train"]), len(hpai.splits["test"])) == (338, 86)
    assert per_class(hpai.splits["test"]) == [fixture.FULL_TEST[c] for c in CLASSES]
    assert all(p.startswith("test/") for p in hpai.splits["test"].relpaths)
    folds = build_dataset("knots", root=str(root / "wood"))  # the top folder works too
    assert (len(folds.splits["train"]), len(folds.splits["test"])) == (339, 85)
    # pooled folds of the HPAI arrangement mix its train/ and test/ folders
    assert {p.split("/")[0] for p in folds.splits["test"].relpaths} == {"train", "test"}


def test_hpai_protocol_needs_hpai_layout(root: Path) -> None:
    with pytest.raises(DatasetError, match="protocol=hpai needs"):
        build_dataset("knots", root=str(root), protocol="hpai")
    with pytest.raises(DatasetError, match="'kfold' or 'hpai'"):
        build_dataset("knots", root=str(root), protocol="other")
    with pytest.raises(ConfigError, match=r"dataset\.split_id must lie in 0\.\.4, got 5"):
        build_dataset("knots", root=str(root), split_id=5)
    with pytest.raises(ConfigError, match=r"dataset\.split_id must be an integer, got 'abc'"):
        build_dataset("knots", root=str(root), split_id="abc")


def test_decayed_class_optional(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "raw", decayed=5)
    six = build_dataset("knots", root=str(root))
    assert len(six.classes) == 6 and not any("decayed" in p for p in six.splits["train"].relpaths)
    seven = build_dataset("knots", root=str(root), include_decayed=True)
    assert seven.classes[0] == "decayed_knot" and len(seven.classes) == 7
    assert int((seven.splits["train"].labels == 0).sum() + (seven.splits["test"].labels == 0).sum()) == 5
    with pytest.raises(DatasetError, match="decayed_knot"):
        build_dataset("knots", root=str(fixture.build(tmp_path / "six")), include_decayed=True)


def test_quirk_images_decode_to_rgb(root: Path) -> None:
    data = build_dataset("knots", root=str(root))
    found = {}
    for samples in data.splits.values():
        for i, rel in enumerate(samples.relpaths):
            if rel in fixture.quirk_files():
                image = samples.load(i)
                assert image.mode == "RGB" and image.size == (8, 8)
                found[rel] = True
    assert sorted(found) == sorted(fixture.quirk_files())
    assert (root / "wood" / next(k for k, v in fixture.quirk_files().items() if v == "bmp")).read_bytes()[:2] == b"BM"


def test_missing_root_gives_instructions(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        build_dataset("knots", root=str(tmp_path / "empty"))
    message = str(err.value)
    assert "Wood knots" in message and "sound_knot/" in message and "dry_knot/" in message
    assert "tl-tradeoff" in message  # the instructions, and the verify command: tests/test_dataset_configs.py


def test_partial_root_names_missing_class(root: Path) -> None:
    for f in (root / "wood" / "horn_knot").iterdir():
        f.unlink()
    (root / "wood" / "horn_knot").rmdir()
    with pytest.raises(DatasetError, match="horn_knot"):
        build_dataset("knots", root=str(root))
