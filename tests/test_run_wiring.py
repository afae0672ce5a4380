"""run(cfg) wiring, in-process on a tiny image folder: what goes into the cache key, that
post-processing sees the train split only, that bad config fails before extraction, and that a
cached split whose skipped images decode again is re-extracted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import COLORS, write_image
from hydra import compose, initialize_config_dir

from tlbench.cli import config_dir
from tlbench.data.transforms import eval_transform
from tlbench.embedding import postprocess
from tlbench.embedding.pipeline import extraction_key
from tlbench.errors import ConfigError, DatasetError
from tlbench.models import create_backbone, resolve_taps
from tlbench.run import run

SMALL = ["model.data_config.input_size=[3,64,64]", "dataset.num_workers=0", "dataset.batch_size=8"]


def compose_cfg(tmp_path: Path, root: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "dataset=imagefolder",
                f"dataset.root={root}",
                "trainer.default_root_dir=null",
                "trainer.enable_progress_bar=false",
                "logger=none",
                f"paths.cache_dir={tmp_path / 'cache'}",
                *SMALL,
                *overrides,
            ],
        )


def test_key_depends_on_precision_data_config_and_random_weights(image_folder):
    from tlbench.data.build import build_dataset

    dataset = build_dataset("imagefolder", root=str(image_folder))

    def key(seed=0, precision="32-true", data_config=None):
        torch.manual_seed(seed)
        backbone = create_backbone("efficientnet_lite0", source="timm", pretrained=False, data_config=data_config)
        taps = resolve_taps(backbone.model, "penultimate", backbone.head)
        return extraction_key(backbone, taps, eval_transform(backbone.data_config), dataset, "train", precision)

    base = key()
    assert key() == base
    assert key(seed=1) != base, "random weights from another seed are other features"
    assert key(precision="bf16-mixed") != base
    assert key(data_config={"mean": [0.48501, 0.456, 0.406]}) != base, "a change below Normalize's repr precision"


def test_postprocess_is_fitted_on_train_rows_only(tmp_path, image_folder, monkeypatch):
    seen = []
    original = postprocess.FeaturePostprocess.fit

    def spy(self, train, *args, **kwargs):
        seen.append(train.shape[0])
        return original(self, train, *args, **kwargs)

    monkeypatch.setattr(postprocess.FeaturePostprocess, "fit", spy)
    result = run(compose_cfg(tmp_path, image_folder), tmp_path / "run")
    assert seen == [result.split_sizes["train"]] == [18]
    assert result.postprocess["statistics"].startswith("train split")


@pytest.mark.parametrize(
    "override,match",
    [
        ("classifier.C=-1", "classifier: .*C must be positive"),
        ("strategy.postprocess.negative=0.5", "strategy.postprocess: .*negative <= positive"),
        ("dataset.batch_size=0", "batch_size must be >= 1"),
    ],
)
def test_bad_values_fail_before_extraction(tmp_path, image_folder, override, match):
    with pytest.raises(ConfigError, match=match):
        run(compose_cfg(tmp_path, image_folder, override), tmp_path / "run")
    assert not (tmp_path / "cache").exists(), "nothing was extracted"


def test_repaired_image_is_re_extracted_on_the_next_run(tmp_path, image_folder):
    bad = image_folder / "train" / "red" / "broken.png"
    bad.write_bytes(b"not an image")
    cfg = compose_cfg(tmp_path, image_folder, "strategy=last_layer")
    first = run(cfg, tmp_path / "run1")
    assert first.skipped_files == {"train": [str(bad)]}
    assert first.cache == {"train": "miss", "test": "miss"}

    again = run(cfg, tmp_path / "run2")
    assert again.cache == {"train": "hit", "test": "hit"}  # still broken: the cache stands

    write_image(bad, COLORS["red"], fmt="PNG", seed=7)
    repaired = run(cfg, tmp_path / "run3")
    assert repaired.skipped_files == {}
    assert repaired.cache["train"] == "miss" and repaired.cache["test"] == "hit"
    assert repaired.split_sizes["train"] == 19


def test_nan_features_are_a_clear_error(tmp_path, image_folder, monkeypatch):
    from tlbench.embedding.hooks import TapRecorder

    original = TapRecorder.collect

    def poisoned(self):
        features = original(self)
        features[0, 0] = float("nan")
        return features

    monkeypatch.setattr(TapRecorder, "collect", poisoned)
    with pytest.raises(DatasetError, match=r"NaN/inf features.*precision"):
        run(compose_cfg(tmp_path, image_folder, "strategy=last_layer", "cache=false"), tmp_path / "run")
    assert not (tmp_path / "run" / "features").exists(), "the run's own feature files are removed"


def test_model_preprocessing_reaches_the_backbone_and_the_record(tmp_path, image_folder):
    """model.preprocessing / model.caffe_mean travel from the config to the extraction and into results.json."""
    tiny = ["model=timm", "model.name=resnet18", "model.pretrained=false", "strategy=last_layer"]
    caffe = ["model.preprocessing=caffe", "model.caffe_mean=[104.051,112.514,116.676]"]
    result = run(compose_cfg(tmp_path, image_folder, *tiny, *caffe), tmp_path / "caffe")
    assert result.backbone["preprocessing"] == "caffe"
    assert result.backbone["data_config"]["caffe_mean"] == [104.051, 112.514, 116.676]
    plain = run(compose_cfg(tmp_path, image_folder, *tiny), tmp_path / "plain")
    assert plain.backbone["preprocessing"] == "torchvision"
    assert plain.cache == {"train": "miss", "test": "miss"}  # other inputs: other cached features
    assert result.postprocess["l2_normalize"] == "image"  # last_layer's default


def test_c_selection_on_the_val_split_refits_on_train_and_val(tmp_path, image_folder):
    """classifier.c_selection=validation (the Kornblith protocol): C scored on val, the final fit on
    train + val, and only test is then a held-out split."""
    tiny = ["model=timm", "model.name=resnet18", "model.pretrained=false", "strategy=last_layer"]
    chosen = ["classifier=logistic_regression", "classifier.C=auto", "classifier.c_selection=validation"]
    grid = ["classifier.c_grid=[0.01,1.0,100.0]"]
    with pytest.raises(ConfigError, match=r"c_selection=validation scores C on the val split.*val_fraction"):
        run(compose_cfg(tmp_path, image_folder, *tiny, *chosen, *grid), tmp_path / "noval")
    result = run(
        compose_cfg(tmp_path, image_folder, *tiny, *chosen, *grid, "dataset.val_fraction=0.34"), tmp_path / "val"
    )
    n_train, n_val = result.split_sizes["train"], result.split_sizes["val"]
    assert n_val > 0 and set(result.metrics) == {"test"}  # val was trained on: not reported as held out
    selection = result.classifier["C_selection"]
    assert selection["folds"] == f"given: 1 fold, {n_train} train / {n_val} validation rows"
    assert result.classifier["C"] in (0.01, 1.0, 100.0) and len(selection["grid"]) == 3
