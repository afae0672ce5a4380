"""Hostile files in an image folder (tests/hostile_images.py): each undecodable one is skipped and
listed with its reason, by `tlbench-data verify` and by a run; the odd but valid ones are used; hidden
files and folders named like images are not listed. Plus the pixel limit (PIL's, or
$TLBENCH_MAX_IMAGE_PIXELS) on small images."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLORS, cache_entries, read_json, run_cli, write_image
from hostile_images import BOMB_SIZE, OVER_LIMIT_SIZE, png_bytes, write_hostile_files
from PIL import Image
from rich.console import Console
from torch.utils.data import DataLoader

from tlbench import data_cli
from tlbench.data import build_dataset
from tlbench.data import images as images_module
from tlbench.data.datamodule import TransformedSplit
from tlbench.data.images import apply_pixel_limit_from_env, load_rgb
from tlbench.data.verify import verify_dataset
from tlbench.errors import ConfigError, ImageDecodeError

# PIL warns about the over-limit image (it refuses only above twice its limit; tlbench above it) and
# about the corrupt EXIF entries; both are expected here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Tag data larger than file:UserWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]

CLEAN_TRAIN, CLEAN_TEST = 4, 2


def hostile_folder(root: Path, over_limit: bool = True):
    """ROOT/train/<colour>/ and ROOT/test/<colour>/ of clean PNGs, the hostile files in train/red."""
    for c, (name, colour) in enumerate(COLORS.items()):
        for split, count in (("train", CLEAN_TRAIN), ("test", CLEAN_TEST)):
            for i in range(count):
                seed = 100 * c + i + (50 if split == "test" else 0)
                write_image(root / split / name / f"{i}.png", colour, size=16, seed=seed)
    hostile = write_hostile_files(root / "train" / "red", colour=COLORS["red"], size=16, over_limit=over_limit)
    return root, hostile


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return hostile_folder(tmp_path_factory.mktemp("hostile") / "folder")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setattr(data_cli, "console", Console(width=1000, color_system=None))

    def run(*argv: str) -> tuple[int, str]:
        rc = data_cli.main(list(argv))
        return rc, capsys.readouterr().out

    return run


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)


def test_hostile_set_is_what_it_claims(folder) -> None:
    """Every undecodable file fails with its reason, every decodable one decodes to RGB (load_rgb)."""
    root, hostile = folder
    red = root / "train" / "red"
    assert len(hostile.undecodable) >= 10 and len(hostile.decodable) >= 9
    for name, reason in hostile.undecodable.items():
        with pytest.raises(ImageDecodeError) as caught:
            load_rgb(red / name)
        message = str(caught.value)
        assert message.startswith(f"{red / name}: "), message
        assert reason in message.lower(), message
    for name in hostile.decodable:
        image = load_rgb(red / name)
        assert image.mode == "RGB" and image.size == (16, 16), name


def test_imagefolder_lists_candidates_by_name_only(folder) -> None:
    root, hostile = folder
    train = build_dataset("imagefolder", root=str(root)).splits["train"]
    listed = {train.describe(i) for i in range(len(train))}
    red = root / "train" / "red"
    for name in [*hostile.undecodable, *hostile.decodable]:
        assert str(red / name) in listed, name
    assert not any(Path(p).name in hostile.ignored or "folder.jpg" in p for p in listed)
    assert len(train) == 3 * CLEAN_TRAIN + len(hostile.undecodable) + len(hostile.decodable)


def test_verify_lists_every_hostile_file_with_its_reason(folder, cli) -> None:
    root, hostile = folder
    red = root / "train" / "red"
    undecodable, decodable = len(hostile.undecodable), 3 * (CLEAN_TRAIN + CLEAN_TEST) + len(hostile.decodable)
    train_size = 3 * CLEAN_TRAIN + undecodable + len(hostile.decodable)

    report = verify_dataset("imagefolder", root, progress=False)
    assert report.problems == []
    assert report.split_sizes == {"train": train_size, "test": 3 * CLEAN_TEST}
    assert report.checked_images == undecodable + decodable
    assert report.decoded_images == decodable
    assert len(report.undecodable) == undecodable
    reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in report.undecodable}
    assert set(reasons) == {str(red / name) for name in hostile.undecodable}
    for name, reason in hostile.undecodable.items():
        assert reason in reasons[str(red / name)].lower()
    assert not report.ok

    rc, out = cli("verify", "imagefolder", "--root", str(root), "--quiet")
    assert rc == 1
    assert (
        f"imagefolder at {root}: train {train_size}, test {3 * CLEAN_TEST}; {decodable} images decoded, "
        f"{undecodable} undecodable (of {undecodable + decodable} checked)"
    ) in out
    lines = re.findall(r"^cannot decode: (.+)$", out, re.M)
    assert len(lines) == undecodable
    for name, reason in hostile.undecodable.items():
        line = next(line for line in lines if line.startswith(f"{red / name}: "))
        assert reason in line.lower()
    for name in [*hostile.decodable, *hostile.ignored]:
        assert not any(line.startswith(f"{red / name}:") for line in lines), name
    assert f"0 problems, {undecodable} undecodable images" in out
    assert "OK" not in out


def test_verify_counts_without_failures(tmp_path: Path, cli) -> None:
    """The counts line says how many decoded; nothing about failures when there are none."""
    for name, colour in COLORS.items():
        for split in ("train", "test"):
            write_image(tmp_path / "f" / split / name / "0.png", colour, size=8)
    rc, out = cli("verify", "imagefolder", "--root", str(tmp_path / "f"), "--quiet")
    assert rc == 0 and "train 3, test 3; 6 images decoded\n" in out and "undecodable" not in out
    rc, out = cli("verify", "imagefolder", "--root", str(tmp_path / "f"), "--quiet", "--no-decode")
    assert rc == 0 and "0 images decoded (--no-decode)" in out


def test_loader_marks_exactly_the_undecodable_rows(folder) -> None:
    """Through a DataLoader worker process, as in a run: skipped rows are ok=False, the rest decode."""
    root, hostile = folder
    samples = build_dataset("imagefolder", root=str(root)).splits["train"]
    loader = DataLoader(TransformedSplit(samples, to_tensor, (3, 8, 8)), batch_size=8, num_workers=1)
    ok = {}
    for batch in loader:
        ok.update(zip(batch["index"].tolist(), batch["ok"].tolist()))
    assert sorted(ok) == list(range(len(samples)))
    by_name = {Path(samples.describe(i)).name: ok[i] for i in range(len(samples)) if "/red/" in samples.describe(i)}
    assert {name for name, fine in by_name.items() if not fine} == set(hostile.undecodable)
    assert all(by_name[name] for name in hostile.decodable)
    assert sum(not fine for fine in ok.values()) == len(hostile.undecodable)


def test_unreadable_file_is_skipped_with_its_reason(tmp_path: Path) -> None:
    path = write_image(tmp_path / "locked.png", (1, 2, 3), size=8)
    path.chmod(0)
    # root reads a file whatever its permissions (CI runs as root): read it as nobody then
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        with pytest.raises(ImageDecodeError, match=r"cannot read file .*Permission denied"):
            load_rgb(path)
    finally:
        if as_root:
            os.seteuid(0)


# --- the pixel limit ---


def test_limit_is_pils_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(images_module.PIXEL_LIMIT_ENV, raising=False)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # nothing in tlbench changes it without the variable
    assert BOMB_SIZE[0] * BOMB_SIZE[1] > 2 * Image.MAX_IMAGE_PIXELS  # PIL refuses it
    assert Image.MAX_IMAGE_PIXELS < OVER_LIMIT_SIZE[0] * OVER_LIMIT_SIZE[1] < 2 * Image.MAX_IMAGE_PIXELS  # PIL warns


def test_real_over_limit_files_are_refused_before_decoding(tmp_path: Path) -> None:
    for name, (w, h) in (("bomb.png", BOMB_SIZE), ("over.png", OVER_LIMIT_SIZE)):
        path = tmp_path / name
        path.write_bytes(png_bytes(w, h))
        assert path.stat().st_size < 100_000
        with pytest.raises(ImageDecodeError, match=r"image too large: .*over the limit of 89,478,485 pixels") as e:
            load_rgb(path)
        assert f"{w * h:,} pixels" in str(e.value) and "TLBENCH_MAX_IMAGE_PIXELS" in str(e.value)


def test_a_lowered_limit_refuses_small_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "a.png", (10, 20, 30), size=32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32)
    assert load_rgb(path).size == (32, 32)  # at the limit: decoded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32 - 1)  # just over (PIL would only warn)
    with pytest.raises(ImageDecodeError, match=r"image too large: 32x32 = 1,024 pixels, over the limit of 1,023"):
        load_rgb(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # over twice the limit: PIL's own error
    with pytest.raises(ImageDecodeError, match=r"image too large: 1,024 pixels, over the limit of 100 pixels"):
        load_rgb(path)


def test_limit_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "a.png", (10, 20, 30), size=32)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv("TLBENCH_MAX_IMAGE_PIXELS", "1_000")
    assert apply_pixel_limit_from_env() == 1000 == Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match="over the limit of 1,000 pixels"):
        load_rgb(path)
    monkeypatch.setenv("TLBENCH_MAX_IMAGE_PIXELS", "none")
    assert apply_pixel_limit_from_env() is None
    assert load_rgb(path).size == (32, 32)
    monkeypatch.setenv("TLBENCH_MAX_IMAGE_PIXELS", "0")
    assert apply_pixel_limit_from_env() is None
    monkeypatch.setenv("TLBENCH_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="TLBENCH_MAX_IMAGE_PIXELS='lots': expected a number of pixels"):
        apply_pixel_limit_from_env()


# --- end to end ---


@pytest.mark.slow
def test_cli_run_skips_exactly_the_undecodable_files(tmp_path: Path) -> None:
    """A whole run (extraction in a DataLoader worker) on the hostile folder finishes; results.json
    lists exactly the undecodable files, the features are those of the readable images."""
    root, hostile = hostile_folder(tmp_path / "folder")
    red = root / "train" / "red"
    proc = run_cli(
        tmp_path,
        "dataset=imagefolder",
        f"dataset.root={root}",
        "dataset.num_workers=1",
        "strategy=last_layer",
    )
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log
    assert f"{len(hostile.undecodable)} unreadable images skipped in train" in log
    results = read_json(tmp_path / "run" / "results.json")
    assert sorted(results["skipped_files"]) == ["train"]
    assert sorted(results["skipped_files"]["train"]) == sorted(str(red / name) for name in hostile.undecodable)
    readable_train = 3 * CLEAN_TRAIN + len(hostile.decodable)
    # split sizes count the files listed (Result.split_sizes), the skipped ones included
    assert results["split_sizes"] == {"train": readable_train + len(hostile.undecodable), "test": 3 * CLEAN_TEST}
    # the classifier saw the readable images only: the cached features hold one row for each
    rows = {
        read_json(e / "meta.json")["split"]: len(np.load(e / "labels.npy")) for e in cache_entries(tmp_path / "cache")
    }
    assert rows == {"train": readable_train, "test": 3 * CLEAN_TEST}
    assert results["metrics"]["test"]["top1"] >= 0.8


def test_an_unlistable_subfolder_is_an_error_not_a_silent_loss() -> None:
    """os.walk skipped a sub-folder it could not list, and its images left the split unnoticed."""
    import shutil
    import tempfile

    from tlbench.data.build import build_dataset
    from tlbench.errors import DatasetError

    base = Path(tempfile.mkdtemp(prefix="tlbench-unlistable-"))  # under /tmp: traversable by nobody
    base.chmod(0o755)
    root = base / "folder"
    for split in ("train", "test"):
        for colour in ("red", "blue"):
            write_image(root / split / colour / "a.png", (200, 0, 0) if colour == "red" else (0, 0, 200), size=8)
    locked = root / "train" / "red" / "more"
    write_image(locked / "b.png", (200, 0, 0), size=8)
    locked.chmod(0)
    as_root = os.geteuid() == 0  # root lists any folder: list it as nobody then
    try:
        if as_root:
            os.seteuid(65534)
        with pytest.raises(DatasetError, match=r"cannot list .*more .*Permission denied"):
            build_dataset("imagefolder", root=str(root))
    finally:
        if as_root:
            os.seteuid(0)
        locked.chmod(0o755)
        shutil.rmtree(base)
