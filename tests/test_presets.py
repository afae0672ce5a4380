"""The experiment presets compose for every cell of their sweep files (`--cfg job` equivalent:
composed and resolved, not run)."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import tlbench  # noqa: F401  (registers the resolvers)

DATASETS = ["mit67", "cub200", "flowers102", "pets", "stanford_dogs", "caltech101", "food101", "dtd", "knots"]


def sweep_lines(name: str) -> list[list[str]]:
    text = (REPO / "slurm" / "sweeps" / name).read_text()
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def compose_cell(preset: str, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={preset}", *overrides, "logger=none"])
    # resolve everything a run resolves, except Hydra's runtime values that need a running job
    cfg.trainer.default_root_dir = None
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(autouse=True)
def data_env(monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TLBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VGG16_PLACES2", str(tmp_path / "vgg16_places365.pth"))
    monkeypatch.setenv("RESNET50_TV", str(tmp_path / "resnet50-0676ba61.pth"))
    return tmp_path


def method_of(cfg: dict) -> str:
    return cfg["strategy"]["layer"] if cfg["strategy"]["name"] == "last_layer" else cfg["strategy"]["name"]


def check_fne_protocol(cfg: dict, method: str) -> None:
    """What every cell of the FNE tables shares, with its source in the preset."""
    post = cfg["strategy"]["postprocess"]
    if method in ("fc6", "fc7"):  # the lab's single-layer baseline: per-image L2, nothing else
        assert (post["l2_normalize"], post["standardize"], post["discretize"]) == ("image", False, False)
    else:
        assert (post["l2_normalize"], post["standardize"], post["discretize"]) == (None, True, True)
    assert cfg["model"]["data_config"]["crop_mode"] == "squash" and cfg["model"]["data_config"]["crop_pct"] == 1.0
    assert cfg["model"]["data_config"]["input_size"] == [3, 224, 224]
    assert cfg["classifier"]["C"] == 1.0 and cfg["classifier"]["backend"] == "sklearn"


def test_fne_table_composes_every_cell(tmp_path):
    lines = sweep_lines("fne_table.txt")
    assert len(lines) == 3 * (7 + 5 + 5)  # fc6, fc7, fne x (7 datasets + caltech101 and knots over 5 splits)
    cells = set()
    for overrides in lines:
        cfg = compose_cell("fne_table", overrides)
        name = cfg["dataset"]["name"]
        method = method_of(cfg)
        cells.add((method, name))
        assert cfg["model"]["name"] == "vgg16" and cfg["experiment"] == "fne_table"
        assert cfg["dataset"]["root"] == str(tmp_path / "data" / name)
        check_fne_protocol(cfg, method)
        places = name == "mit67"  # Places2 for mit67 (Caffe convention), ImageNet (torchvision) otherwise
        assert cfg["model"]["weights"] == (str(tmp_path / "vgg16_places365.pth") if places else None)
        assert cfg["model"]["preprocessing"] == ("caffe" if places else "torchvision")
        if places:
            assert cfg["model"]["caffe_mean"] == [104.051, 112.514, 116.676]  # places365CNN_mean.binaryproto
        assert cfg["paper"]["metric"] == "top1"
        assert cfg["paper"]["results"][method][name]["mean"] > 50
    assert cells == {(m, d) for m in ("fc6", "fc7", "fne") for d in DATASETS}
    splits = [o for o in sweep_lines("fne_table.txt") if "dataset=caltech101" in o and "strategy=fne" in o]
    assert sorted(o[1] for o in splits) == [f"dataset.split_id={i}" for i in range(5)]


@pytest.mark.parametrize(
    "dataset,expected",
    [
        ("flowers102", {"trainval": False}),  # the lab's pool is the official train split (10/class)
        ("dtd", {"trainval": True, "split_id": 1}),  # the lab trains on train + val
        ("caltech101", {"train_per_class_split": 30, "test_per_class": 50, "include_background": False}),
        ("knots", {"protocol": "kfold", "num_folds": 5}),
        ("pets", {}),  # official trainval / test
    ],
)
def test_fne_table_one_cell_carries_its_dataset_protocol(dataset, expected):
    """`tlbench +experiment=fne_table dataset=X` alone gets X's protocol: no sweep line needed."""
    cfg = compose_cell("fne_table", [f"dataset={dataset}", "strategy=last_layer", "strategy.layer=fc6"])
    assert {k: cfg["dataset"][k] for k in expected} == expected
    check_fne_protocol(cfg, "fc6")
    plain = compose_cell(
        "fne_table", [f"dataset={dataset}", "strategy=fne", f"dataset.{next(iter(expected), 'val_seed')}=7"]
    )
    assert plain["dataset"][next(iter(expected), "val_seed")] == 7  # the command line still wins


def test_swapped_pretraining_table_composes_every_cell(tmp_path):
    lines = sweep_lines("fne_swapped_table.txt")
    assert len(lines) == 2 * (5 + 5 + 5)  # fc7, fne x (5 datasets + caltech101 and knots over 5 splits)
    cells = set()
    for overrides in lines:
        cfg = compose_cell("fne_swapped_table", overrides)
        name, method = cfg["dataset"]["name"], method_of(cfg)
        cells.add((method, name))
        check_fne_protocol(cfg, method)
        imagenet = name == "mit67"  # swapped: ImageNet for mit67, Places2 for the rest
        assert cfg["model"]["weights"] == (None if imagenet else str(tmp_path / "vgg16_places365.pth"))
        assert cfg["model"]["preprocessing"] == ("torchvision" if imagenet else "caffe")
        assert cfg["paper"]["results"][method][name]["mean"] > 20
    assert cells == {
        (m, d) for m in ("fc7", "fne") for d in ("mit67", "cub200", "flowers102", "pets", "caltech101", "dtd", "knots")
    }
    dtd = compose_cell("fne_swapped_table", ["dataset=dtd", "strategy=fne"])
    assert dtd["dataset"]["trainval"] is True  # the FNE table's split, with the swapped weights


KORNBLITH = {  # dataset: (its metric in SimCLR App. B.8.1, how C is validated)
    "food101": ("top1", {"val_fraction": 0.1}),
    "cifar10": ("top1", {"val_fraction": 0.1}),
    "cifar100": ("top1", {"val_fraction": 0.1, "label_type": "fine"}),
    "sun397": ("top1", {"split_id": 1, "val_fraction": 0.2}),
    "stanford_cars": ("top1", {"val_fraction": 0.2026}),
    "fgvc_aircraft": ("mean_per_class", {"trainval": False, "annotation_level": "variant"}),  # official val
    "dtd": ("top1", {"split_id": 1, "trainval": False}),
    "pets": ("mean_per_class", {"val_fraction": 0.2011}),
    "caltech101": ("mean_per_class", {"include_background": True, "test_per_class": None, "val_fraction": 0.1666}),
    "flowers102": ("mean_per_class", {"trainval": False}),
}


def test_kornblith_table_composes_every_cell(tmp_path):
    lines = sweep_lines("kornblith_table.txt")
    assert [o[0].split("=")[1] for o in lines] == list(KORNBLITH)
    for overrides in lines:
        cfg = compose_cell("kornblith_table", overrides)
        name = cfg["dataset"]["name"]
        metric, split = KORNBLITH[name]
        assert {k: cfg["dataset"][k] for k in split} == split
        assert cfg["model"]["name"] == "resnet50.tv_in1k" and cfg["model"]["source"] == "timm"
        assert cfg["model"]["weights"] == str(tmp_path / "resnet50-0676ba61.pth")
        data = cfg["model"]["data_config"]
        assert (data["interpolation"], data["crop_pct"], data["crop_mode"]) == ("bicubic", 1.0, "center")
        assert cfg["strategy"]["name"] == "last_layer" and cfg["strategy"]["layer"] == "penultimate"
        post = cfg["strategy"]["postprocess"]
        assert (post["l2_normalize"], post["standardize"], post["discretize"]) == (None, False, False)  # raw
        classifier = cfg["classifier"]
        assert classifier["_target_"].endswith("LogisticRegression") and classifier["C"] == "auto"
        assert classifier["c_selection"] == "validation"
        grid = classifier["c_grid"]  # 45 log-spaced values, C = 1 / lambda for lambda in 1e-6 .. 1e5
        assert len(grid) == 45 and grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e6)
        ratios = [b / a for a, b in itertools.pairwise(grid)]
        assert min(ratios) == pytest.approx(10**0.25, rel=1e-3) and max(ratios) == pytest.approx(10**0.25, rel=1e-3)
        cell = cfg["paper"]["results"]["penultimate"][name]
        assert cell.get("metric", cfg["paper"]["metric"]) == metric
        assert 60 <= cell["mean"] <= 95


def test_finetune_table_composes_every_cell(tmp_path):
    lines = sweep_lines("finetune_table.txt")
    assert len(lines) == 7 + 5 + 5
    for overrides in lines:
        cfg = compose_cell("finetune_table", overrides)
        assert cfg["strategy"]["name"] == "finetune" and cfg["strategy"]["schedule"]["preset"] == "progressive"
        assert cfg["model"]["name"] == "vgg16"
        assert cfg["dataset"]["root"] == str(tmp_path / "data" / cfg["dataset"]["name"])
        places = cfg["dataset"]["name"] == "mit67"  # the FNE table's weights and splits
        assert cfg["model"]["preprocessing"] == ("caffe" if places else "torchvision")
        assert cfg["model"]["weights"] == (str(tmp_path / "vgg16_places365.pth") if places else None)
    assert {compose_cell("finetune_table", o)["dataset"]["name"] for o in lines[:9]} <= set(DATASETS)


def test_fne_table_without_the_data_folder_is_a_clear_error(monkeypatch, tmp_path):
    from tlbench.errors import ConfigError
    from tlbench.run import run

    monkeypatch.delenv("TLBENCH_DATA")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=fne_table", "dataset=dtd", "logger=none"])
    cfg.trainer.default_root_dir = None
    with pytest.raises(
        ConfigError, match=r"cannot resolve dataset.root: Environment variable 'TLBENCH_DATA' not found"
    ):
        run(cfg, tmp_path / "run")


def test_wandb_groups_a_preset_runs_by_experiment():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=fne_table", "dataset=dtd", "logger=wandb"])
        plain = compose("config", overrides=["logger=wandb"])
    assert cfg.logger.group == "fne_table"
    assert plain.logger.group is None  # then the sweep, or no group for a single run
