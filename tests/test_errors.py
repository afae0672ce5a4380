"""Bad input gives a clear, actionable error and loses nothing.

Most cases call tlbench in-process and check the TlbenchError subclass and its message; a few go
through the CLI to check the exit code, the message on stderr and that no result is written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import COLORS, REPO, run_cli, write_image
from hydra import compose, initialize_config_dir

from tlbench.data import build_dataset
from tlbench.errors import ConfigError, DatasetError, TlbenchError, WeightsError
from tlbench.models import create_backbone
from tlbench.run import run

LAYOUT_HINT = "ROOT/train/<class>/<image>"

# --- dataset errors ---


def test_error_classes_share_a_base() -> None:
    for cls in (ConfigError, DatasetError, WeightsError):
        assert issubclass(cls, TlbenchError)


def test_unknown_dataset_lists_available() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'.*digits.*imagefolder"):
        build_dataset("nope")


def test_unknown_dataset_parameter_lists_accepted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not take \['colour'\].*root.*split_seed.*test_fraction"):
        build_dataset("imagefolder", root=str(tmp_path), colour="red")


def test_imagefolder_without_root() -> None:
    with pytest.raises(DatasetError, match=r"dataset\.root=PATH"):
        build_dataset("imagefolder", root=None)


def test_imagefolder_missing_root_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DatasetError) as info:
        build_dataset("imagefolder", root=str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert LAYOUT_HINT in message and "test/" in message
    assert not missing.exists()  # nothing created on the way


def test_imagefolder_root_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "images.zip"
    file.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="not a folder"):
        build_dataset("imagefolder", root=str(file))


def test_imagefolder_root_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    write_image(root / "loose.png", (1, 2, 3))  # images directly in ROOT are not a class
    with pytest.raises(DatasetError, match="has no class folders") as info:
        build_dataset("imagefolder", root=str(root))
    assert str(root) in str(info.value) and LAYOUT_HINT in str(info.value)


def test_imagefolder_train_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "ds" / "train").mkdir(parents=True)
    (tmp_path / "ds" / "test").mkdir()
    with pytest.raises(DatasetError, match="has no class folders") as info:
        build_dataset("imagefolder", root=str(tmp_path / "ds"))
    assert str(tmp_path / "ds" / "train") in str(info.value)


def test_imagefolder_train_without_test(image_folder: Path) -> None:
    for f in (image_folder / "test").rglob("*.png"):
        f.unlink()
    for d in sorted((image_folder / "test").iterdir()):
        d.rmdir()
    (image_folder / "test").rmdir()
    with pytest.raises(DatasetError, match=r"train exists but .*test does not") as info:
        build_dataset("imagefolder", root=str(image_folder))
    assert str(image_folder / "test") in str(info.value) and LAYOUT_HINT in str(info.value)


def test_imagefolder_class_only_in_test_is_named(image_folder: Path) -> None:
    write_image(image_folder / "test" / "purple" / "0.png", (150, 0, 150))
    with pytest.raises(DatasetError) as info:
        build_dataset("imagefolder", root=str(image_folder))
    message = str(info.value)
    assert "purple" in message
    assert str(image_folder / "test") in message
    assert "not in" in message and str(image_folder / "train") in message


def test_imagefolder_class_only_in_val_is_named(image_folder: Path) -> None:
    write_image(image_folder / "val" / "red" / "0.png", COLORS["red"])
    write_image(image_folder / "val" / "yellow" / "0.png", (230, 230, 0))
    with pytest.raises(DatasetError, match="yellow"):
        build_dataset("imagefolder", root=str(image_folder))


def test_imagefolder_empty_training_class_is_named(image_folder: Path) -> None:
    for f in (image_folder / "train" / "green").iterdir():
        f.unlink()
    (image_folder / "train" / "green" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"without images.*green"):
        build_dataset("imagefolder", root=str(image_folder))


def test_imagefolder_class_folders_without_images(tmp_path: Path) -> None:
    for name in COLORS:
        (tmp_path / "ds" / name).mkdir(parents=True)
    with pytest.raises(DatasetError, match="no image files"):
        build_dataset("imagefolder", root=str(tmp_path / "ds"))


def test_seeded_split_class_with_one_image(tmp_path: Path) -> None:
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(1 if name == "blue" else 5):
            write_image(tmp_path / "ds" / name / f"{i}.png", color, size=8, seed=10 * c + i)
    with pytest.raises(DatasetError, match="single image"):
        build_dataset("imagefolder", root=str(tmp_path / "ds"))


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2])
def test_seeded_split_fraction_out_of_range(tmp_path: Path, fraction: float) -> None:
    for c, (name, color) in enumerate(COLORS.items()):
        for i in range(4):
            write_image(tmp_path / "ds" / name / f"{i}.png", color, size=8, seed=10 * c + i)
    with pytest.raises(DatasetError, match=r"strictly between 0 and 1"):
        build_dataset("imagefolder", root=str(tmp_path / "ds"), test_fraction=fraction)


# --- model and weights errors ---


def test_unknown_model_source() -> None:
    with pytest.raises(ConfigError, match=r"unknown model\.source 'keras'.*timm.*torchvision"):
        create_backbone("resnet18", source="keras")


def test_unknown_timm_model_suggests_similar() -> None:
    # Suggestions come from a substring search, so a prefix of real names finds them.
    with pytest.raises(ConfigError, match=r"timm has no model 'resnet1'; similar:.*resnet18"):
        create_backbone("resnet1", source="timm", pretrained=False)


def test_timm_name_with_pretrained_tag_is_accepted() -> None:
    """`model.name=resnet18.a1_in1k` is a valid timm name (architecture.pretrained_tag).

    timm.is_model strips the tag; timm.list_models() lists architectures only.
    """
    backbone = create_backbone("resnet18.a1_in1k", source="timm", pretrained=False)
    assert backbone.model.pretrained_cfg["tag"] == "a1_in1k"
    assert backbone.weights_id.startswith("random-init:")


def test_packaged_source_only_has_efficientnet_lite0() -> None:
    with pytest.raises(ConfigError, match="only provides efficientnet_lite0"):
        create_backbone("resnet18", source="efficientnet_lite0_package")


def test_unknown_torchvision_model() -> None:
    with pytest.raises(ConfigError, match="torchvision has no model 'vgg17'"):
        create_backbone("vgg17", source="torchvision", pretrained=False)


def test_weights_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "efficientnet_lite0.pth"
    with pytest.raises(WeightsError) as info:
        create_backbone("efficientnet_lite0", source="timm", weights=str(missing))
    message = str(info.value)
    assert str(missing) in message and "does not exist" in message
    assert "model.weights=PATH" in message


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("junk.pth", b"definitely not a pickle" * 10),
        ("random.pth", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
        ("random.ckpt", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))),
        ("pickle.pth", b"\x80\x02garbage that is no pickle"),
        ("random.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}xxxxxxxx"),
    ],
)
def test_weights_file_that_is_not_a_state_dict(tmp_path: Path, name: str, content: bytes) -> None:
    """Named as unreadable, with what tlbench reads; never torch's advice to load it unsafely."""
    junk = tmp_path / name
    junk.write_bytes(content)
    with pytest.raises(WeightsError, match="is not a checkpoint tlbench can read") as err:
        create_backbone("efficientnet_lite0", source="timm", weights=str(junk))
    message = str(err.value)
    assert str(junk) in message
    assert "weights_only=False" not in message and "file an issue" not in message.lower()


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    return path


def test_weights_of_another_model_name_missing_and_unexpected_keys(resnet18_weights: Path) -> None:
    with pytest.raises(WeightsError) as info:
        create_backbone("efficientnet_lite0", source="timm", weights=str(resnet18_weights))
    message = str(info.value)
    assert str(resnet18_weights) in message
    assert "EfficientNet" in message
    # key lists are sorted and cut after 8 names, with the total
    assert re.search(r"missing keys: blocks\.0\.0\.\S+, .*\(\d+ in all\)", message)
    assert re.search(r"unexpected keys: conv1\.weight, fc\.bias, fc\.weight, layer1\.", message)
    assert "model.name / model.source" in message


def test_weights_with_wrong_shapes(tmp_path: Path) -> None:
    state = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    state["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)  # the model has 32 stem channels
    path = tmp_path / "reshaped.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatches: conv_stem\.weight: file \(16, 3, 3, 3\)"):
        create_backbone("efficientnet_lite0", source="timm", weights=str(path))


def test_untrained_weights_are_refused(tmp_path: Path) -> None:
    """A random-init state dict loads cleanly but must not pass as pretrained weights."""
    path = tmp_path / "random_init.pth"
    torch.save(timm.create_model("efficientnet_lite0", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError, match="look untrained"):
        create_backbone("efficientnet_lite0", source="timm", weights=str(path))


def test_unknown_strategy_in_run(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["strategy.name=distill"])
    with pytest.raises(ConfigError, match=r"strategy 'distill' is not implemented.*last_layer.*fne.*finetune"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_imagefolder_root_not_given(tmp_path: Path) -> None:
    """`dataset=imagefolder` without dataset.root must say that dataset.root is required.

    The config's `root: ???` must not reach the builder as the string '???'.
    """
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=imagefolder", f"paths.output_dir={tmp_path}"])
    with pytest.raises(TlbenchError, match=r"dataset\.root"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


# --- through the CLI ---


def _previous_results(tmp_path: Path) -> Path:
    """A results.json from an earlier run in the same run dir: a failed run must leave it alone, even
    with overwrite=true (which the tests pass so the run gets past the finished-result guard)."""
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"earlier": true}')
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("group", "listed"),
    [
        ("dataset", ["digits", "imagefolder"]),
        ("model", ["efficientnet_lite0", "timm", "vgg16"]),
        ("strategy", ["fne", "last_layer"]),
    ],
)
def test_cli_unknown_config_group_option(tmp_path: Path, group: str, listed: list[str]) -> None:
    proc = run_cli(tmp_path, f"{group}=nope", check=False, timeout=120)
    assert proc.returncode != 0
    output = proc.stderr + proc.stdout
    assert f"Could not find '{group}/nope'" in output
    assert f"Available options in '{group}'" in output
    for option in listed:
        assert option in output
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_cli_run_dir_with_a_finished_result_is_refused(tmp_path: Path) -> None:
    previous = _previous_results(tmp_path)
    proc = run_cli(tmp_path, "strategy=last_layer", check=False, timeout=180)
    assert proc.returncode == 2
    assert f"tlbench: error: {previous} already exists" in proc.stderr
    assert "overwrite=true" in proc.stderr and "Traceback" not in proc.stderr
    assert previous.read_text() == '{"earlier": true}'
    assert not (tmp_path / "cache").exists()  # refused before any extraction


@pytest.mark.slow
def test_cli_missing_imagefolder_root(tmp_path: Path) -> None:
    previous = _previous_results(tmp_path)
    missing = tmp_path / "nowhere"
    proc = run_cli(
        tmp_path, "dataset=imagefolder", f"dataset.root={missing}", "overwrite=true", check=False, timeout=180
    )
    assert proc.returncode == 2
    assert f"tlbench: error: imagefolder root {missing} does not exist" in proc.stderr
    assert LAYOUT_HINT in proc.stderr
    assert "Traceback" not in proc.stderr
    assert previous.read_text() == '{"earlier": true}'


@pytest.mark.slow
def test_cli_timm_pretrained_unavailable_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty Hugging Face cache, and no offline flag from the environment: tlbench itself must
    # keep the hub offline and answer quickly (the timeout turns a hang into a failure).
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    proc = run_cli(
        tmp_path,
        "model=timm",
        "model.name=resnet18",
        "dataset.num_workers=0",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "pretrained weights for timm model 'resnet18' are not available offline" in proc.stderr
    assert "model.weights=/path/to/resnet18.safetensors" in proc.stderr
    assert "model.download=true" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_cli_weights_that_do_not_match_the_model(tmp_path: Path, resnet18_weights: Path) -> None:
    previous = _previous_results(tmp_path)
    proc = run_cli(
        tmp_path,
        "model=timm",
        "model.name=efficientnet_lite0",
        f"model.weights={resnet18_weights}",
        "overwrite=true",
        check=False,
        timeout=180,
    )
    assert proc.returncode == 2
    assert "tlbench: error: weights from" in proc.stderr
    assert "missing keys:" in proc.stderr and "unexpected keys:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert previous.read_text() == '{"earlier": true}'
    # nothing cached from a model that never loaded
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
