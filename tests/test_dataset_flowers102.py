"""Oxford Flowers 102: the real layout (jpg/, imagelabels.mat, setid.mat), official splits, torchvision parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import flowers102 as fixture
from scipy.io import loadmat

from tlbench.data import build_dataset, dataset_info
from tlbench.data.datasets.flowers102 import CLASSES
from tlbench.data.download import extract
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError


def listing(samples) -> list[tuple[str, int]]:
    return [(str(samples.path(i)), int(samples.labels[i])) for i in range(len(samples))]


@pytest.fixture
def flowers(tmp_path: Path) -> Path:
    return fixture.build(tmp_path / "flowers")


def on_disk(root: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The raw 1-based labels and split IDs, read independently of the loader."""
    labels = loadmat(root / "imagelabels.mat")["labels"].ravel().astype(int)
    setid = loadmat(root / "setid.mat")
    return labels, {
        s: setid[k].ravel().astype(int) for s, k in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))
    }


def test_splits_counts_labels_and_classes(flowers: Path) -> None:
    ds = build_dataset("flowers102", root=str(flowers))
    assert ds.name == "flowers102" and ds.metric == "mean_per_class"
    assert ds.classes == list(CLASSES) and len(ds.classes) == 102
    assert ds.classes[0] == "pink primrose" and ds.classes[101] == "blackberry lily"
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "val": 8, "test": 12}
    labels, ids = on_disk(flowers)
    for split, samples in ds.splits.items():
        assert samples.labels.dtype == np.int64
        assert np.bincount(samples.labels).tolist() == ([3] * 4 if split == "test" else [2] * 4)
        # matched by image ID: file image_{id:05d}.jpg carries labels[id - 1] - 1
        assert samples.relpaths == [f"jpg/image_{i:05d}.jpg" for i in ids[split]]
        assert samples.labels.tolist() == [int(labels[i - 1]) - 1 for i in ids[split]]
    assert ds.root == str(flowers)
    # the three splits are disjoint and cover every image
    every = [p for s in ds.splits.values() for p in s.relpaths]
    assert len(set(every)) == len(every) == len(labels)


def test_trainval_protocol(flowers: Path) -> None:
    ds = build_dataset("flowers102", root=str(flowers), trainval=True)
    plain = build_dataset("flowers102", root=str(flowers))
    assert set(ds.splits) == {"train", "test"}
    assert ds.splits["train"].relpaths == plain.splits["train"].relpaths + plain.splits["val"].relpaths
    assert (
        ds.splits["train"].labels.tolist()
        == plain.splits["train"].labels.tolist() + plain.splits["val"].labels.tolist()
    )
    assert listing(ds.splits["test"]) == listing(plain.splits["test"])


def test_matches_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import Flowers102

    root = fixture.build(tmp_path / "tv", torchvision_layout=True)
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)  # md5 of the real .mat files
    ds = build_dataset("flowers102", root=str(root))  # finds root/flowers-102
    assert ds.root == str(root / "flowers-102")
    assert ds.classes == Flowers102.classes
    for split in ("train", "val", "test"):
        tv = Flowers102(str(root), split=split, download=False)
        theirs = [(str(p), int(y)) for p, y in zip(tv._image_files, tv._labels)]
        assert listing(ds.splits[split]) == theirs
        assert len(theirs) > 0


def test_quirk_images_decode_and_construction_is_lazy(flowers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import PIL.Image

    def no_open(*args, **kwargs):
        raise AssertionError("building the dataset opened an image")

    with monkeypatch.context() as patch:
        patch.setattr(PIL.Image, "open", no_open)
        ds = build_dataset("flowers102", root=str(flowers))
    seen = set()
    for samples in ds.splits.values():
        for i in range(len(samples)):
            image = samples.load(i)
            assert image.mode == "RGB" and image.size == (16, 16)
            seen.add(samples.relpaths[i])
    assert {f"jpg/image_{fixture.GRAYSCALE_ID:05d}.jpg", f"jpg/image_{fixture.CMYK_ID:05d}.jpg"} <= seen
    with PIL.Image.open(flowers / "jpg" / f"image_{fixture.CMYK_ID:05d}.jpg") as raw:
        assert raw.mode == "CMYK"


def test_missing_root_names_dataset_layout_and_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        build_dataset("flowers102", root=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "Oxford Flowers 102 (flowers102)" in message
    assert "setid.mat" in message and "imagelabels.mat" in message  # the layout


@pytest.mark.parametrize("remove", ["imagelabels.mat", "jpg", "jpg/image_00004.jpg"])
def test_partial_root_names_missing_files(flowers: Path, remove: str) -> None:
    target = flowers / remove
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DatasetError) as err:
        build_dataset("flowers102", root=str(flowers))
    message = str(err.value)
    assert remove in message
    assert "tlbench-data download flowers102" in message


def test_bad_mat_contents_are_reported(flowers: Path) -> None:
    from scipy.io import savemat

    savemat(flowers / "setid.mat", {"trnid": np.array([[1, 999]]), "valid": np.array([[2, 3]]), "tstid": [[4, 5]]})
    with pytest.raises(DatasetError, match="image IDs outside"):
        build_dataset("flowers102", root=str(flowers))
    savemat(flowers / "setid.mat", {"trnid": np.array([[1, 2]])})
    with pytest.raises(DatasetError, match="no field 'valid'"):
        build_dataset("flowers102", root=str(flowers))


def test_full_size_index_matches_published_sizes(tmp_path: Path) -> None:
    root = fixture.build(tmp_path / "full", full_size=True)
    ds = build_dataset("flowers102", root=str(root))
    info = dataset_info("flowers102")
    assert {s: len(v) for s, v in ds.splits.items()} == info.split_sizes == {"train": 1020, "val": 1020, "test": 6149}
    assert np.bincount(ds.splits["train"].labels).tolist() == [10] * 102
    assert np.bincount(ds.splits["val"].labels).tolist() == [10] * 102
    assert len(ds.classes) == info.num_classes
    # verify (no decoding): counts match; the fixture's .mat files differ from the published md5s
    report = verify_dataset("flowers102", root, decode=False, progress=False)
    assert report.split_sizes == info.split_sizes
    assert len(report.problems) == 2
    for name, problem in zip(("imagelabels.mat", "setid.mat"), sorted(report.problems)):
        assert str(root / name) in problem and "md5 mismatch" in problem


def test_published_archives_extract_into_a_loadable_root(tmp_path: Path) -> None:
    downloads = fixture.build_archives(tmp_path / "downloads")
    info = dataset_info("flowers102")
    assert {r.filename for r in info.resources} == {p.name for p in downloads.iterdir()}
    root = tmp_path / "root"
    for resource in info.resources:  # as `tlbench-data download` lays them out
        if resource.extract:
            extract(downloads / resource.filename, root)
        else:
            (root / resource.filename).write_bytes((downloads / resource.filename).read_bytes())
    ds = build_dataset("flowers102", root=str(root))
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 8, "val": 8, "test": 12}
    assert ds.splits["test"].load(0).mode == "RGB"


def test_info() -> None:
    info = dataset_info("flowers102")
    assert info.torchvision == "Flowers102" and info.num_classes == 102 and info.metric == "mean_per_class"
    assert all(r.md5 and r.url.startswith("https://www.robots.ox.ac.uk/") for r in info.resources)
