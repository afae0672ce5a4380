"""The README stays true: its set-up commands are what CI runs, its config groups exist, and the
config tree composes for every option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tlbench.cli import config_dir

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
