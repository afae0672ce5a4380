"""The README stays true: its set-up commands are what CI runs, its config groups exist, and the
config tree composes for every option."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tlbench.cli import config_dir
from tlbench.data import TransferDataModule
from tlbench.models import create_backbone

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", README, re.S)
    assert block, "README lost its 'Two commands' block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("&& tlbench")
    assert "pytest" in commands[1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci, ".ci/run must run the README's test command verbatim"


def test_readme_config_table_matches_conf_tree():
    rows = re.findall(r"^\| `([\w/]+)` \| (.*?) \|", README, re.M)
    groups = {group: re.findall(r"`([\w-]+)`", options) for group, options in rows}
    conf = config_dir()
    for group in ("dataset", "model", "strategy", "classifier", "trainer", "logger", "paths"):
        on_disk = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        assert sorted(groups[group]) == on_disk, f"README options for {group}"
    launchers = sorted(p.stem for p in (conf / "hydra" / "launcher").glob("*.yaml"))
    assert sorted(groups["hydra/launcher"]) == sorted(["basic", *launchers]), "README options for hydra/launcher"


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["strategy=last_layer"],
        ["model=vgg16", "strategy=fne"],
        ["model=vgg16", "strategy=last_layer", "strategy.layer=fc6"],
        ["model=timm", "model.name=resnet18", "dataset=imagefolder", "dataset.root=/x", "logger=none"],
    ],
)
def test_config_composes(overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=False)
    assert cfg.strategy.name in ("fne", "last_layer")
    if "strategy=last_layer" in overrides and len(overrides) == 1:
        assert cfg.strategy.taps == "penultimate"
    if "model=vgg16" in overrides and "strategy=fne" in overrides:
        assert cfg.strategy.taps == "vgg16_fne"
    if "strategy.layer=fc6" in overrides:
        assert cfg.strategy.taps == "fc6"
    if not overrides:
        assert (cfg.dataset.name, cfg.model.name, cfg.strategy.name) == ("digits", "efficientnet_lite0", "fne")
        assert cfg.classifier.C == 1.0


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "dataset").glob("*.yaml")))
def test_dataset_group_is_a_partial_datamodule_with_the_shared_loader_keys(name):
    dataset = _compose(f"dataset={name}").dataset
    assert dataset._target_ == "tlbench.data.TransferDataModule" and dataset._partial_ is True
    assert dataset.name == name
    loader = OmegaConf.load(config_dir() / "dataset_defaults" / "loader.yaml")
    assert set(loader) <= set(dataset)  # every dataset has them, from the one shared file
    for key in set(loader) - {"num_workers"}:
        assert dataset[key] == loader[key], key
    parameters = inspect.signature(TransferDataModule).parameters
    assert set(loader) <= set(parameters)


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "model").glob("*.yaml")))
def test_model_group_targets_create_backbone_with_its_parameters_only(name):
    model = _compose(f"model={name}").model
    assert model._target_ == "tlbench.models.create_backbone"
    keys = {k for k in model if not k.startswith("_")}
    assert keys <= set(inspect.signature(create_backbone).parameters)
    shared = OmegaConf.load(config_dir() / "model_defaults" / "data_config.yaml").data_config
    assert set(model.data_config) == set(shared)


def test_shared_defaults_are_not_options_of_their_groups():
    for group, shared in (("dataset", "loader"), ("model", "data_config")):
        with pytest.raises(hydra.errors.MissingConfigException, match=rf"Could not find '{group}/{shared}'"):
            _compose(f"{group}={shared}")


@pytest.mark.parametrize(
    ("override", "options"),
    [("strategy/optimizer=rmsprop", ["adamw", "sgd"]), ("strategy/lr_schedule=linear", ["constant", "cosine", "step"])],
)
def test_unknown_optimizer_or_lr_schedule_names_the_choices(override, options):
    group = override.split("=")[0]
    with pytest.raises(hydra.errors.MissingConfigException) as error:
        _compose("strategy=finetune", override)
    assert f"Available options in '{group}'" in str(error.value)
    assert re.findall(r"^\t(\w+)$", str(error.value), re.M) == options


def test_finetune_optimizer_and_lr_schedule_are_targets():
    default = _compose("strategy=finetune").strategy
    assert OmegaConf.to_container(default.optimizer) == {
        "_target_": "torch.optim.SGD",
        "_partial_": True,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1.0e-4,
    }
    assert OmegaConf.to_container(default.lr_schedule) == {
        "_target_": "tlbench.finetune.lr_schedules.Cosine",
        "warmup_steps": 0,
    }
    adamw = _compose(
        "strategy=finetune",
        "strategy/optimizer=adamw",
        "strategy.optimizer.lr=3e-4",
        "strategy/lr_schedule=step",
        "strategy.lr_schedule.warmup_steps=100",
    ).strategy
    assert OmegaConf.to_container(adamw.optimizer) == {
        "_target_": "torch.optim.AdamW",
        "_partial_": True,
        "lr": 3e-4,
        "weight_decay": 1.0e-4,  # what strategy.optimizer.name=adamw trained with
    }
    assert OmegaConf.to_container(adamw.lr_schedule) == {
        "_target_": "tlbench.finetune.lr_schedules.Step",
        "warmup_steps": 100,
        "gamma": 0.1,
        "step_epochs": 10,
    }
    schedule = instantiate(adamw.lr_schedule)
    assert (schedule.warmup_steps, schedule.gamma, schedule.step_epochs) == (100, 0.1, 10)


@pytest.mark.parametrize(
    ("override", "group", "choices"),
    [
        ("strategy.optimizer.name=adamw", "strategy/optimizer=adamw", "adamw, sgd"),
        ("strategy.lr_schedule.name=step", "strategy/lr_schedule=step", "constant, cosine, step"),
    ],
)
def test_keys_that_became_groups_name_the_new_spelling(override, group, choices):
    """The old `strategy.optimizer.name=...` spelling: an error naming the group and its choices."""
    done = subprocess.run(
        [sys.executable, "-m", "tlbench.cli", "strategy=finetune", override], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert f"use {group}" in done.stderr and f"(choices: {choices})" in done.stderr
