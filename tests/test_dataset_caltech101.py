"""Caltech101: listing and class order as torchvision, the seeded 30/50 protocol written to a split file."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import caltech101 as fixture
from tlbench.data import build_dataset, dataset_info, stored_splits
from tlbench.data.datasets.caltech101 import list_images
from tlbench.errors import DatasetError

SMALL = {"train_per_class_split": 4, "test_per_class": 3}
SMALL_FILE = "caltech101_split{}_train4_test3.txt"


@pytest.fixture(autouse=True)
def split_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep split files that fall back to the cache out of the user's home."""
    folder = tmp_path / "split-cache"
    monkeypatch.setenv("TLBENCH_SPLIT_DIR", str(folder))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "data")


def relpaths(samples) -> list[str]:
    return list(samples.relpaths)


def test_classes_counts_and_labels(root: Path) -> None:
    data = build_dataset("caltech101", root=str(root), **SMALL)
    assert data.classes == ["Faces", "Faces_easy", "Motorbikes", "airplanes", "inline_skate"]  # sorted, no background
    assert data.metric == "mean_per_class"
    assert Path(data.root) == root / "caltech101"
    train, test = data.splits["train"], data.splits["test"]
    assert sorted(data.splits) == ["test", "train"]
    assert np.bincount(train.labels).tolist() == [4] * 5
    assert np.bincount(test.labels).tolist() == [3] * 5
    for samples in (train, test):
        assert samples.labels.min() == 0 and samples.labels.max() == 4
        for rel, label in zip(samples.relpaths, samples.labels):
            assert rel.split("/")[1] == data.classes[label]
            assert "BACKGROUND_Google" not in rel
    assert not set(train.relpaths) & set(test.relpaths)


def test_test_per_class_none_takes_the_rest_and_background_option(root: Path) -> None:
    data = build_dataset("caltech101", root=str(root), train_per_class_split=4, test_per_class=None)
    expected = [n - 4 for _, n in sorted(fixture.SMALL_COUNTS.items())]
    assert np.bincount(data.splits["test"].labels).tolist() == expected
    with_bg = build_dataset("caltech101", root=str(root), include_background=True, **SMALL)
    assert with_bg.classes[0] == "BACKGROUND_Google" and len(with_bg.classes) == 6
    assert (with_bg.splits["train"].labels == 0).sum() == 4


def test_split_file_written_next_to_data_reused_and_seeded(root: Path, split_cache: Path) -> None:
    data0 = build_dataset("caltech101", root=str(root), split_id=0, **SMALL)
    path0 = root / "caltech101" / "tlbench_splits" / SMALL_FILE.format(0)
    text = path0.read_text()
    assert text.startswith("# tlbench split file: caltech101 split_id=0")
    body = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    assert [p for s, p in body if s == "train"] == relpaths(data0.splits["train"])
    assert [p for s, p in body if s == "test"] == relpaths(data0.splits["test"])
    assert not split_cache.exists()  # root was writable

    again = build_dataset("caltech101", root=str(root), split_id=0, **SMALL)
    assert relpaths(again.splits["train"]) == relpaths(data0.splits["train"])
    other = build_dataset("caltech101", root=str(root), split_id=1, **SMALL)
    assert relpaths(other.splits["train"]) != relpaths(data0.splits["train"])
    assert (path0.parent / SMALL_FILE.format(1)).is_file()

    # The file, not the seed, defines the split from now on: an edited file is followed.
    moved = body[0][1]
    path0.write_text(text.replace(f"train\t{moved}\n", f"test\t{moved}\n"))
    edited = build_dataset("caltech101", root=str(root), split_id=0, **SMALL)
    assert moved in edited.splits["test"].relpaths and moved not in edited.splits["train"].relpaths


def test_stale_split_file_is_an_error(root: Path) -> None:
    build_dataset("caltech101", root=str(root), **SMALL)
    path = root / "caltech101" / "tlbench_splits" / SMALL_FILE.format(0)
    with path.open("a") as out:
        out.write("test\t101_ObjectCategories/airplanes/image_0099.jpg\n")
    with pytest.raises(DatasetError, match=r"image_0099\.jpg.*delete the split file"):
        build_dataset("caltech101", root=str(root), **SMALL)


def test_read_only_root_falls_back_to_cache(root: Path, split_cache: Path, monkeypatch) -> None:
    real_write = stored_splits._write_atomically

    def refuse_root(path: Path, text: str) -> None:
        if root in path.parents:
            raise PermissionError(f"read-only: {path}")
        real_write(path, text)

    monkeypatch.setattr(stored_splits, "_write_atomically", refuse_root)
    first = build_dataset("caltech101", root=str(root), **SMALL)
    cached = list(split_cache.glob("caltech101_split0_train4_test3-*.txt"))
    assert len(cached) == 1 and not (root / "caltech101" / "tlbench_splits").exists()
    text = cached[0].read_text()
    second = build_dataset("caltech101", root=str(root), **SMALL)
    assert relpaths(second.splits["test"]) == relpaths(first.splits["test"])
    assert cached[0].read_text() == text


# A fresh interpreter that runs the builder. It stubs the tlbench.data packages so that their __init__ (which
# imports torch and Lightning for the datamodule, ~4 s per process, and every dataset) is skipped: the split
# code is the same.
SCRIPT = """
import sys, types
for name, folder in (("tlbench.data", sys.argv[2]), ("tlbench.data.datasets", sys.argv[2] + "/datasets")):
    package = types.ModuleType(name)
    package.__path__ = [folder]
    sys.modules[name] = package
from tlbench.data.datasets.caltech101 import caltech101
for split_id in (0, 1):
    d = caltech101(root=sys.argv[1], split_id=split_id)
    print(split_id, len(d.splits["train"]), len(d.splits["test"]))
"""
REPO = Path(__file__).resolve().parents[1]
PACKAGE = str(REPO / "tlbench" / "data")


def test_full_size_protocol_identical_across_processes(tmp_path: Path) -> None:
    roots = [fixture.build(tmp_path / f"copy{i}", full_size=True) for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(r), PACKAGE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for r in roots
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
        # split sizes equal the published ones (30 train, min(50, rest) test per class)
        assert out.split("\n")[0] == "0 3030 2945"
    files = [
        [(r / "caltech101" / "tlbench_splits" / f"caltech101_split{i}.txt").read_bytes() for i in (0, 1)] for r in roots
    ]
    assert files[0][0] == files[1][0] and files[0][1] == files[1][1]  # same id: byte-identical
    assert files[0][0] != files[0][1]  # another id: another split
    info = dataset_info("caltech101")
    data = build_dataset("caltech101", root=str(roots[0]))  # reads the file written by the subprocess
    assert {s: len(v) for s, v in data.splits.items()} == info.split_sizes
    assert len(data.classes) == info.num_classes == 101
    test_counts = np.bincount(data.splits["test"].labels)
    assert test_counts[data.classes.index("inline_skate")] == 1 and test_counts.max() == 50


def test_matches_torchvision_listing(root: Path, monkeypatch) -> None:
    from torchvision.datasets import Caltech101

    tv = Caltech101(str(root), target_type="category", download=False)
    classes, ours, labels = list_images(root / "caltech101")
    assert classes == tv.categories
    theirs = [(f"101_ObjectCategories/{tv.categories[y]}/image_{i:04d}.jpg", y) for i, y in zip(tv.index, tv.y)]
    assert list(zip(ours, labels.tolist())) == theirs
    # every split image keeps torchvision's label
    data = build_dataset("caltech101", root=str(root), train_per_class_split=4, test_per_class=None)
    pooled = sorted((p, int(y)) for s in data.splits.values() for p, y in zip(s.relpaths, s.labels))
    assert pooled == sorted(theirs)


def test_quirk_images_decode_to_rgb(root: Path) -> None:
    data = build_dataset("caltech101", root=str(root), train_per_class_split=4, test_per_class=None)
    found = set()
    for samples in data.splits.values():
        for i, rel in enumerate(samples.relpaths):
            if rel in (fixture.GRAYSCALE, fixture.CMYK):
                image = samples.load(i)
                assert image.mode == "RGB" and image.size == (8, 8)
                found.add(rel)
    assert found == {fixture.GRAYSCALE, fixture.CMYK}


def test_default_protocol_needs_more_than_30_images(root: Path) -> None:
    with pytest.raises(DatasetError, match="inline_skate \\(7\\)"):
        build_dataset("caltech101", root=str(root))


def test_missing_root_names_files_and_download(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as err:
        build_dataset("caltech101", root=str(tmp_path / "empty"))
    message = str(err.value)
    assert "Caltech101" in message and "101_ObjectCategories" in message


def test_packed_inner_archive_is_named(tmp_path: Path) -> None:
    packed = tmp_path / "dl" / "caltech-101"
    packed.mkdir(parents=True)
    with tarfile.open(packed / "101_ObjectCategories.tar.gz", "w:gz"):
        pass
    with pytest.raises(DatasetError, match=r"101_ObjectCategories\.tar\.gz is still packed"):
        build_dataset("caltech101", root=str(tmp_path / "dl"))


def test_empty_class_folder_is_reported(root: Path) -> None:
    (root / "caltech101" / "101_ObjectCategories" / "yin_yang").mkdir()
    with pytest.raises(DatasetError, match="yin_yang \\(0\\)"):
        build_dataset("caltech101", root=str(root), **SMALL)


def test_split_id_of_the_wrong_type_is_a_config_error(tmp_path):
    from tlbench.errors import ConfigError

    root = fixture.build(tmp_path / "caltech")
    with pytest.raises(ConfigError, match=r"dataset\.split_id must be an integer, got 'abc'"):
        build_dataset("caltech101", root=str(root), split_id="abc", train_per_class_split=4, test_per_class=3)
