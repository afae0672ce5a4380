"""Shared fixtures: running the real CLI in a subprocess and writing small image folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_cli(tmp_path: Path, *overrides: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `tlbench` with outputs and cache under tmp_path; the run dir is tmp_path/run."""
    env = {
        **os.environ,
        "TLBENCH_OUTPUT_DIR": str(tmp_path / "outputs"),
        "TLBENCH_CACHE_DIR": str(tmp_path / "cache"),
        "HYDRA_FULL_ERROR": "1",
    }
    args = [sys.executable, "-m", "tlbench.cli", *overrides]
    if not any(o.startswith("hydra.run.dir=") for o in overrides) and "-m" not in overrides:
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlbench failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, standardized, float32: a small real problem for the classifiers."""
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(x).astype(np.float32), y


def cache_entries(cache: Path, prepared: bool = False) -> list[Path]:
    """A feature cache's keys (links to their current version folders): the extracted features',
    or with `prepared` the int8 FNE inputs made from them."""
    links = sorted(p for p in cache.iterdir() if p.is_symlink())
    return [p for p in links if (read_json(p / "meta.json").get("kind") == "prepared") == prepared]


def write_image(path: Path, color: tuple[int, int, int], size: int = 32, fmt: str | None = None, seed: int = 0) -> Path:
    """A small RGB image: a colour with noise, so classes are separable but images differ."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_folder(root: Path, train: int, test: int) -> Path:
    """ROOT/train/<class>/*.png and ROOT/test/<class>/*.png: `train` and `test` images of each of
    the three colour classes."""
    for split, count in (("train", train), ("test", test)):
        for c, (name, color) in enumerate(COLORS.items()):
            for i in range(count):
                write_image(root / split / name / f"{i}.png", color, seed=100 * c + i + (0 if split == "train" else 50))
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """ROOT/train/<class>/*.png and ROOT/test/<class>/*.png, three colour classes."""
    return colour_folder(tmp_path / "folder", train=6, test=3)
