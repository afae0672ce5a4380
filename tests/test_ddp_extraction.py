"""Extraction on 2 processes that Lightning starts itself (no SLURM: DDP on CPU with gloo) gives
exactly the features of 1 process; the SLURM path (srun ranks) is in test_slurm.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cache_entries, colour_folder, read_json, run_cli

from tlbench.embedding.store import read_entry

pytestmark = pytest.mark.slow
TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false", "trainer.accelerator=cpu"]


def odd_folder(root: Path) -> Path:
    return colour_folder(root, train=5, test=3)  # 15 and 9 images: odd, so ranks get unequal shares


def test_two_lightning_processes_extract_exactly_what_one_does(tmp_path):
    folder = odd_folder(tmp_path / "folder")
    results = {}
    for devices in (1, 2):
        work = tmp_path / f"d{devices}"
        work.mkdir()
        run_cli(work, "dataset=imagefolder", f"dataset.root={folder}", *TINY, f"trainer.devices={devices}")
        results[devices] = read_json(work / "run" / "results.json")
    assert results[1]["metrics"] == results[2]["metrics"]
    assert results[2]["config"]["trainer"]["devices"] == 2
    entries = {d: cache_entries(tmp_path / f"d{d}" / "cache") for d in (1, 2)}
    assert [p.name for p in entries[1]] == [p.name for p in entries[2]] and len(entries[1]) == 2
    for one, two in zip(entries[1], entries[2]):
        a, b = read_entry(one), read_entry(two)
        assert b.indices.tolist() == list(range(len(b.indices)))  # each image once, in order
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.features, b.features)
    assert not (Path(results[2]["run_dir"]) / "shards").exists()  # merged and removed


def test_two_lightning_processes_without_cache(tmp_path):
    """cache=false: the ranks' shards merge into the run's own folder, which only rank 0 removes,
    after it has used it (a rank that finished first must not delete it under rank 0)."""
    folder = odd_folder(tmp_path / "folder")
    results = {}
    for devices in (1, 2):
        work = tmp_path / f"d{devices}"
        work.mkdir()
        run_cli(
            work, "dataset=imagefolder", f"dataset.root={folder}", *TINY, f"trainer.devices={devices}", "cache=false"
        )
        results[devices] = read_json(work / "run" / "results.json")
        assert not (work / "run" / "features").exists() and not (work / "run" / "shards").exists()
        assert not (work / "cache").exists()
    assert results[1]["metrics"] == results[2]["metrics"]
    assert results[2]["cache"] == {"train": "miss", "test": "miss"}
