"""The checks every dataset shares, once per dataset: its Hydra config agrees with its builder, and a missing
root is an error that names the dataset, its layout and the `tlbench-data` commands that fix it. Each
dataset's own formats are tested in its tests/test_dataset_<name>.py."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tlbench.data import available_datasets, build_dataset, dataset_info
from tlbench.data.registry import dataset_builder
from tlbench.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml"))
# The keys of the data module beside the builder's; every dataset has them, with these defaults where given.
LOADER_KEYS = ("val_fraction", "val_seed", "train_per_class", "few_shot_seed", "batch_size", "num_workers")
LOADER_DEFAULTS = {"val_fraction": 0.0, "val_seed": 0, "train_per_class": None, "few_shot_seed": 0}
HYDRA_KEYS = {"_target_", "_partial_"}  # instantiation keys, where the config has them
# Datasets read from downloaded archives (not bundled, not the user's own folder).
ARCHIVES = [n for n in CONFIGS if n not in ("digits", "imagefolder")]


@functools.cache  # composing takes a second; the tests only read the result
def dataset_config(name: str) -> DictConfig:
    """conf/dataset/<name>.yaml as a run sees it (defaults lists applied)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"dataset={name}"]).dataset


def builder_params(name: str) -> dict:
    """The builder arguments in the dataset's config, root excluded."""
    cfg = OmegaConf.to_container(dataset_config(name))
    return {k: v for k, v in cfg.items() if k not in {"name", "root", *LOADER_KEYS, *HYDRA_KEYS}}


def test_every_registered_dataset_has_a_config() -> None:
    assert set(CONFIGS) <= set(available_datasets())
    assert {n for n in available_datasets() if dataset_info(n) is not None} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_agrees_with_the_builder(name: str) -> None:
    cfg = dataset_config(name)
    params = inspect.signature(dataset_builder(name)).parameters
    assert cfg.name == name
    if name == "digits":  # bundled: no root to set
        assert "root" not in cfg and params["root"].default is None
    else:
        assert OmegaConf.is_missing(cfg, "root")  # `???`: a run must name it
    assert set(LOADER_KEYS) <= set(cfg)
    for key, value in LOADER_DEFAULTS.items():
        assert cfg[key] == value, key
    own = builder_params(name)
    assert set(own) == set(params) - {"root"}  # every builder parameter is settable, and nothing else
    for key, value in own.items():
        assert value == params[key].default, key  # the config's defaults are the builder's


@pytest.mark.parametrize("where", ["nowhere", "empty"])
@pytest.mark.parametrize("name", ARCHIVES)
def test_missing_root_names_dataset_layout_and_the_fix(tmp_path: Path, name: str, where: str) -> None:
    root = tmp_path / where
    if where == "empty":
        root.mkdir()
    info = dataset_info(name)
    with pytest.raises(DatasetError) as err:
        build_dataset(name, root=str(root))
    message = str(err.value)
    assert f"{info.title} ({name})" in message
    assert f"Expected layout under ROOT:\n{info.layout}" in message
    assert f"tlbench-data verify {name} --root {root}" in message
    if info.resources:
        assert f"tlbench-data download {name} --root {root}" in message
    else:  # nothing to download: the instructions say how to get it
        assert info.instructions and info.instructions in message
        assert "tlbench-data download" not in message


@pytest.mark.parametrize("name", ARCHIVES)
def test_no_root_is_an_error_asking_for_one(name: str) -> None:
    with pytest.raises(DatasetError, match=r"needs dataset\.root"):
        build_dataset(name)
