"""The imagefolder dataset, robust image decoding and TransferDataModule, mostly in-process.

One end-to-end CLI run at the end checks that a corrupt image is skipped and listed, not fatal.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLORS, read_json, run_cli, write_image
from PIL import Image

from tlbench.data import TransferDataModule, build_dataset
from tlbench.data.datamodule import TransformedSplit
from tlbench.data.images import load_rgb
from tlbench.data.samples import FileSamples, SubsetSamples
from tlbench.data.transforms import eval_transform
from tlbench.models import create_backbone

CLASSES = sorted(COLORS)  # ["blue", "green", "red"]


def make_flat_folder(root: Path, per_class: int = 10) -> Path:
    """ROOT/<class>/*.png, no explicit split."""
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(per_class):
            write_image(root / name / f"{i:02d}.png", color, size=8, seed=1000 * c + i)
    return root


def split_files(samples: FileSamples) -> list[tuple[str, int]]:
    return [(str(samples.path(i)), int(samples.labels[i])) for i in range(len(samples))]


def class_of(path: str) -> str:
    return Path(path).parent.name


@pytest.fixture(scope="module")
def eval_setup() -> tuple:
    """A real eval transform (timm's, from a random-init efficientnet_lite0: no weights needed)."""
    backbone = create_backbone("efficientnet_lite0", source="timm", pretrained=False)
    return eval_transform(backbone.data_config), tuple(backbone.data_config["input_size"])


# --- train/test layout ---


def test_explicit_layout_sorted_classes_and_sizes(image_folder: Path) -> None:
    ds = build_dataset("imagefolder", root=str(image_folder))
    assert ds.name == "imagefolder"
    assert ds.classes == CLASSES
    assert set(ds.splits) == {"train", "test"}
    assert len(ds.splits["train"]) == 3 * 6
    assert len(ds.splits["test"]) == 3 * 3
    for split in ("train", "test"):
        samples = ds.splits[split]
        assert samples.labels.dtype == np.int64
        assert sorted(set(samples.labels.tolist())) == [0, 1, 2]
        # the label is the index of the file's class folder in the sorted class list
        for path, label in split_files(samples):
            assert Path(path).is_file()
            assert f"/{split}/" in path
            assert ds.classes[label] == class_of(path)
    assert ds.params == {"root": str(image_folder)}


def test_explicit_layout_picks_up_val_and_ignores_non_images(image_folder: Path) -> None:
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(2):
            write_image(image_folder / "val" / name / f"{i}.png", color, seed=700 + 10 * c + i)
    # Noise that must not be listed: hidden files, non-image files, hidden folders.
    (image_folder / "train" / "red" / ".hidden.png").write_bytes(b"x")
    (image_folder / "train" / "red" / "notes.txt").write_text("not an image")
    write_image(image_folder / "train" / ".cache" / "0.png", (0, 0, 0))
    # Nested folders inside a class folder are walked; upper-case extensions count.
    write_image(image_folder / "train" / "green" / "sub" / "DEEP.PNG", COLORS["green"], seed=9)

    ds = build_dataset("imagefolder", root=str(image_folder))
    assert ds.classes == CLASSES  # ".cache" is not a class
    assert set(ds.splits) == {"train", "val", "test"}
    assert {s: len(v) for s, v in ds.splits.items()} == {"train": 19, "val": 6, "test": 9}
    train_paths = [p for p, _ in split_files(ds.splits["train"])]
    assert not any(p.endswith((".hidden.png", "notes.txt")) for p in train_paths)
    deep = [p for p in train_paths if p.endswith("DEEP.PNG")]
    assert len(deep) == 1
    assert ds.splits["train"].labels[train_paths.index(deep[0])] == CLASSES.index("green")
    val_labels = ds.splits["val"].labels
    assert np.bincount(val_labels).tolist() == [2, 2, 2]


def test_test_split_may_lack_a_class(image_folder: Path) -> None:
    """A test/ folder with a subset of the training classes keeps the training label indices."""
    for f in (image_folder / "test" / "blue").iterdir():
        f.unlink()
    (image_folder / "test" / "blue").rmdir()
    ds = build_dataset("imagefolder", root=str(image_folder))
    assert ds.classes == CLASSES
    assert sorted(set(ds.splits["test"].labels.tolist())) == [
        CLASSES.index("green"),
        CLASSES.index("red"),
    ]


# --- seeded single-folder split ---


def test_single_folder_seeded_stratified_split(tmp_path: Path) -> None:
    root = make_flat_folder(tmp_path / "flat", per_class=10)
    all_files = {str(p) for p in root.rglob("*.png")}

    a = build_dataset("imagefolder", root=str(root), test_fraction=0.3, split_seed=0)
    again = build_dataset("imagefolder", root=str(root), test_fraction=0.3, split_seed=0)
    other = build_dataset("imagefolder", root=str(root), test_fraction=0.3, split_seed=1)

    assert a.classes == CLASSES
    assert set(a.splits) == {"train", "test"}
    train, test = split_files(a.splits["train"]), split_files(a.splits["test"])
    assert len(train) == 21 and len(test) == 9
    # stratified: every class in both parts, in proportion
    assert np.bincount(a.splits["train"].labels).tolist() == [7, 7, 7]
    assert np.bincount(a.splits["test"].labels).tolist() == [3, 3, 3]
    # disjoint and complete
    assert not {p for p, _ in train} & {p for p, _ in test}
    assert {p for p, _ in train} | {p for p, _ in test} == all_files
    for path, label in train + test:
        assert a.classes[label] == class_of(path)
    # deterministic for a seed, different for another
    assert split_files(again.splits["train"]) == train
    assert split_files(again.splits["test"]) == test
    assert split_files(other.splits["test"]) != test
    assert np.bincount(other.splits["test"].labels).tolist() == [3, 3, 3]


def test_single_folder_fingerprint_depends_on_split(tmp_path: Path) -> None:
    """Feature caching keys on the fingerprint: another split seed must not reuse features."""
    root = make_flat_folder(tmp_path / "flat", per_class=6)
    a = build_dataset("imagefolder", root=str(root), split_seed=0)
    b = build_dataset("imagefolder", root=str(root), split_seed=0)
    c = build_dataset("imagefolder", root=str(root), split_seed=3)
    assert a.splits["test"].fingerprint() == b.splits["test"].fingerprint()
    assert a.splits["test"].fingerprint() != c.splits["test"].fingerprint()
    assert a.params["split_seed"] == 0 and c.params["split_seed"] == 3


# --- datamodule ---


def test_datamodule_val_fraction_holdout(tmp_path: Path, eval_setup: tuple) -> None:
    transform, input_size = eval_setup
    root = make_flat_folder(tmp_path / "flat", per_class=10)
    kwargs = dict(transform=transform, input_size=input_size, root=str(root), test_fraction=0.3)
    plain = TransferDataModule("imagefolder", **kwargs)
    dm = TransferDataModule("imagefolder", val_fraction=0.3, val_seed=0, **kwargs)
    dm_again = TransferDataModule("imagefolder", val_fraction=0.3, val_seed=0, **kwargs)
    dm_other = TransferDataModule("imagefolder", val_fraction=0.3, val_seed=5, **kwargs)

    assert plain.split_names == ["train", "test"]
    assert dm.split_names == ["train", "val", "test"]
    assert dm.split_sizes() == {"train": 14, "val": 7, "test": 9}
    assert dm.classes == CLASSES

    train, val = dm.dataset.splits["train"], dm.dataset.splits["val"]
    assert isinstance(train, SubsetSamples) and isinstance(val, SubsetSamples)
    train_files = {train.describe(i) for i in range(len(train))}
    val_files = {val.describe(i) for i in range(len(val))}
    test_files = {dm.dataset.splits["test"].describe(i) for i in range(len(dm.dataset.splits["test"]))}
    original = plain.dataset.splits["train"]
    original_files = {original.describe(i) for i in range(len(original))}
    assert not train_files & val_files
    assert train_files | val_files == original_files  # the holdout comes from train only
    assert not (train_files | val_files) & test_files
    # stratified: every class in the holdout and in what is left
    assert set(val.labels.tolist()) == {0, 1, 2}
    assert set(train.labels.tolist()) == {0, 1, 2}
    for i in range(len(val)):
        assert CLASSES[int(val.labels[i])] == class_of(val.describe(i))
    # seeded
    again = dm_again.dataset.splits["val"]
    assert [again.describe(i) for i in range(len(again))] == [val.describe(i) for i in range(len(val))]
    other = dm_other.dataset.splits["val"]
    assert {other.describe(i) for i in range(len(other))} != val_files


def test_datamodule_keeps_explicit_val_folder(image_folder: Path, eval_setup: tuple) -> None:
    transform, input_size = eval_setup
    for c, (name, color) in enumerate(COLORS.items()):
        write_image(image_folder / "val" / name / "0.png", color, seed=900 + c)
    dm = TransferDataModule(
        "imagefolder",
        transform=transform,
        input_size=input_size,
        val_fraction=0.5,
        root=str(image_folder),
    )
    # An explicit val/ folder wins over val_fraction: train is not shrunk.
    assert dm.split_sizes() == {"train": 18, "val": 3, "test": 9}
    assert isinstance(dm.dataset.splits["val"], FileSamples)


def test_datamodule_loader_batches(image_folder: Path, eval_setup: tuple) -> None:
    transform, input_size = eval_setup
    dm = TransferDataModule(
        "imagefolder",
        transform=transform,
        input_size=input_size,
        batch_size=4,
        root=str(image_folder),
    )
    batches = list(dm.test_dataloader())
    assert [len(b["index"]) for b in batches] == [4, 4, 1]
    first = batches[0]
    assert first["image"].shape == (4, *input_size)
    assert first["image"].dtype == torch.float32
    assert first["ok"].all()
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert indices == list(range(9))  # unshuffled: extraction relies on the order
    labels = torch.cat([b["label"] for b in batches]).numpy()
    assert (labels == dm.dataset.splits["test"].labels).all()


# --- decoding ---


def test_png_with_jpg_name_decodes_from_content(tmp_path: Path) -> None:
    path = write_image(tmp_path / "actually_png.jpg", (10, 200, 30), size=16, fmt="PNG")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (16, 16)
    # PNG is lossless: the exact pixels come back
    with Image.open(path) as original:
        assert np.array_equal(np.asarray(image), np.asarray(original.convert("RGB")))


def _save(tmp_path: Path, name: str, image: Image.Image, fmt: str) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue())
    return path


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    path = _save(tmp_path, "gray.png", Image.new("L", (12, 10), 77), "PNG")
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (12, 10)
    assert np.asarray(image)[0, 0].tolist() == [77, 77, 77]


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    pixels = np.full((6, 6), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    path = _save(tmp_path, "deep.png", Image.fromarray(pixels), "PNG")
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert abs(int(np.asarray(image)[0, 0, 0]) - 128) <= 2  # not 255 (clipped) nor 0


def test_palette_becomes_rgb(tmp_path: Path) -> None:
    palette_image = Image.new("P", (8, 8), 1)
    palette_image.putpalette([0, 0, 0, 10, 120, 250] + [0] * (256 * 3 - 6))
    path = _save(tmp_path, "palette.gif", palette_image, "GIF")
    with Image.open(path) as raw:
        assert raw.mode == "P"
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert np.asarray(image)[3, 3].tolist() == [10, 120, 250]


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (200, 0, 0, 255))
    for x in range(4):
        for y in range(8):
            rgba.putpixel((x, y), (0, 0, 200, 0))  # fully transparent left half
    path = _save(tmp_path, "alpha.png", rgba, "PNG")
    image = load_rgb(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels[0, 0].tolist() == [255, 255, 255]  # transparent -> white background
    assert pixels[0, 7].tolist() == [200, 0, 0]  # opaque keeps its colour


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(tmp_path, "cmyk.jpg", Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG")
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (16, 16)
    r, g, b = np.asarray(image)[8, 8].tolist()
    assert r < 40 and g > 215 and b > 215  # pure cyan


# --- corrupt files ---


def test_corrupt_image_yields_zero_image_not_exception(image_folder: Path, eval_setup: tuple) -> None:
    transform, input_size = eval_setup
    bad = image_folder / "train" / "red" / "x.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(600))
    truncated = image_folder / "train" / "blue" / "y.png"
    good = (image_folder / "train" / "blue" / "0.png").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])

    ds = build_dataset("imagefolder", root=str(image_folder))
    samples = ds.splits["train"]
    assert len(samples) == 20  # the broken files are listed; decoding decides later
    paths = [str(samples.path(i)) for i in range(len(samples))]
    split = TransformedSplit(samples, transform, input_size)
    for broken in (bad, truncated):
        index = paths.index(str(broken))
        item = split[index]
        assert item["ok"] is False
        assert item["index"] == index
        assert item["label"] == CLASSES.index(broken.parent.name)
        assert isinstance(item["image"], torch.Tensor)
        assert tuple(item["image"].shape) == input_size
        assert not item["image"].any()
    fine = split[paths.index(str(image_folder / "train" / "red" / "0.png"))]
    assert fine["ok"] is True
    assert tuple(fine["image"].shape) == input_size and fine["image"].abs().sum() > 0


# --- end to end ---


@pytest.mark.slow
def test_cli_imagefolder_skips_corrupt_file(tmp_path: Path, image_folder: Path) -> None:
    bad = image_folder / "train" / "red" / "x.jpg"
    bad.write_bytes(np.random.default_rng(1).bytes(800))

    proc = run_cli(
        tmp_path,
        "dataset=imagefolder",
        f"dataset.root={image_folder}",
        "dataset.num_workers=0",
        "strategy=last_layer",
    )
    log = proc.stdout + proc.stderr
    assert "1 unreadable images skipped in train" in log and str(bad) in log  # the warning
    results = read_json(tmp_path / "run" / "results.json")
    assert results["dataset"] == "imagefolder"
    assert results["num_classes"] == 3
    assert results["skipped_files"] == {"train": [str(bad)]}
    # split sizes count the files listed, the unreadable one included (Result.split_sizes)
    assert results["split_sizes"] == {"train": 19, "test": 9}
    assert set(results["metrics"]) == {"test"}
    assert results["metrics"]["test"]["top1"] >= 0.9
    assert results["metrics"]["test"]["mean_per_class"] >= 0.9
