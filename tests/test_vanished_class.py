"""A class whose every image is unreadable must not vanish quietly (issue 13, item 7): it used to drop
out of the classifier, and the mean per-class accuracy was computed over the other classes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import colour_folder
from test_run_wiring import compose_cfg

from tlbench.errors import DatasetError
from tlbench.run import run

TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false", "strategy=last_layer"]


def _spoil(folder: Path) -> None:
    """Every image of the folder replaced by bytes no decoder reads (the files stay listed)."""
    for path in folder.iterdir():
        path.write_bytes(b"not an image at all" * 10)


@pytest.mark.parametrize("split", ["train", "test"])
def test_class_with_only_unreadable_images_is_an_error(tmp_path: Path, split: str) -> None:
    root = colour_folder(tmp_path / "folder", train=4, test=2)
    _spoil(root / split / "green")
    with pytest.raises(DatasetError, match=rf"1 of 3 classes have no readable image in the {split} split") as err:
        run(compose_cfg(tmp_path, root, *TINY), tmp_path / "run")
    assert "green" in str(err.value) and "tlbench-data verify" in str(err.value)
    assert not (tmp_path / "run" / "results.json").exists()


def test_class_with_some_readable_images_still_runs(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "folder", train=4, test=2)
    (root / "train" / "green" / "0.png").write_bytes(b"broken")
    result = run(compose_cfg(tmp_path, root, *TINY), tmp_path / "run")
    assert result is not None and result.num_classes == 3
    assert [Path(f).name for f in result.skipped_files["train"]] == ["0.png"]


def test_class_absent_from_a_test_listing_is_not_lost(tmp_path: Path) -> None:
    """A class listed for training but with no test folder is not a skipped class: it runs."""
    root = colour_folder(tmp_path / "folder", train=4, test=2)
    shutil.rmtree(root / "test" / "green")
    result = run(compose_cfg(tmp_path, root, *TINY), tmp_path / "run")
    assert result is not None and result.split_sizes["test"] == 4
