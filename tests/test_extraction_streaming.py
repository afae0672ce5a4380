"""Extraction as it streams to disk: the cached rows equal a bare forward pass with the same hooks
(autocast off), channels_last and bf16 autocast change the key and stay close, the features of a
run without cache are removed with the run, and progress shows images per second."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import cache_entries, read_json
from test_run_wiring import compose_cfg

from tlbench.data import TransferDataModule
from tlbench.data.transforms import eval_transform
from tlbench.embedding import postprocess as postprocess_module
from tlbench.embedding.hooks import TapRecorder
from tlbench.embedding.store import FeatureSet, FeatureStore, read_entry
from tlbench.models import create_backbone, resolve_taps
from tlbench.run import run

TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false", "strategy=fne"]


def cached_entries(tmp_path) -> dict[str, object]:
    entries = {}
    for link in cache_entries(tmp_path / "cache"):
        entries[read_json(link / "meta.json")["split"]] = read_entry(link)
    return entries


def bare_forward(cfg, split: str) -> np.ndarray:
    """The same model, weights, taps and batches, without Lightning, the writer or the cache."""
    torch.manual_seed(cfg.seed)  # resnet18 with random weights: the seed run() uses
    backbone = create_backbone(cfg.model.name, source="timm", pretrained=False, data_config={"input_size": [3, 64, 64]})
    taps = resolve_taps(backbone.model, cfg.strategy.taps, backbone.head)
    data = TransferDataModule(
        "imagefolder",
        transform=eval_transform(backbone.data_config),
        input_size=backbone.data_config["input_size"],
        root=cfg.dataset.root,
        batch_size=8,
    )
    recorder = TapRecorder(backbone.model, taps)
    backbone.model.eval()
    rows = []
    with torch.inference_mode():
        for batch in data.loader(split):
            backbone.model(batch["image"])
            rows.append(recorder.collect().numpy())
    recorder.remove()
    return np.concatenate(rows)


def test_streamed_features_equal_a_bare_forward_pass(tmp_path, image_folder):
    cfg = compose_cfg(tmp_path, image_folder, *TINY)
    result = run(cfg, tmp_path / "run")
    entries = cached_entries(tmp_path)
    assert set(entries) == {"train", "test"}
    for split, entry in entries.items():
        assert isinstance(entry.features, np.memmap) and entry.features.dtype == np.float32
        assert entry.indices.tolist() == list(range(result.split_sizes[split]))
        np.testing.assert_array_equal(entry.features, bare_forward(cfg, split))


@pytest.mark.parametrize("override", ["model.channels_last=true", "trainer.precision=bf16-mixed"])
def test_channels_last_and_autocast_are_other_keys_with_close_features(tmp_path, image_folder, override):
    plain = run(compose_cfg(tmp_path / "a", image_folder, *TINY, "strategy=last_layer"), tmp_path / "a" / "run")
    other = run(
        compose_cfg(tmp_path / "b", image_folder, *TINY, "strategy=last_layer", override), tmp_path / "b" / "run"
    )
    a, b = cached_entries(tmp_path / "a"), cached_entries(tmp_path / "b")
    assert {p.name for p in (tmp_path / "a" / "cache").iterdir()} != {
        p.name for p in (tmp_path / "b" / "cache").iterdir()
    }
    tolerance = 2e-2 if "bf16" in override else 1e-4  # bf16 keeps 8 bits of mantissa
    scale = float(np.abs(a["train"].features).max())
    np.testing.assert_allclose(b["train"].features, a["train"].features, atol=tolerance * scale, rtol=tolerance)
    assert b["train"].features.dtype == np.float32  # autocast outputs are stored as float32
    assert (other.config["model"]["channels_last"], other.config["trainer"]["precision"]) != (
        plain.config["model"]["channels_last"],
        plain.config["trainer"]["precision"],
    )  # the setting is in results.json


def test_without_cache_the_features_stream_to_the_run_and_are_removed(tmp_path, image_folder):
    result = run(compose_cfg(tmp_path, image_folder, *TINY, "cache=false"), tmp_path / "run")
    assert result.cache == {"train": "miss", "test": "miss"}
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "run" / "features").exists()
    assert result.postprocess["dtype"] == "int8" and result.postprocess["bytes_per_feature"] == 1


def test_progress_bar_shows_images_per_second(tmp_path, image_folder, capsys, caplog):
    caplog.set_level(logging.INFO, logger="tlbench.embedding.pipeline")
    cfg = compose_cfg(tmp_path, image_folder, *TINY, "trainer.enable_progress_bar=true")
    result = run(cfg, tmp_path / "run")
    shown = capsys.readouterr()
    assert "Extracting" in shown.out + shown.err and "img/s" in shown.out + shown.err
    assert any("images/s" in r.getMessage() and "extracted imagefolder/train" in r.getMessage() for r in caplog.records)
    assert result.timings["extract_images_per_s"] > 0


def test_interrupted_extraction_leaves_no_entry(tmp_path, image_folder, monkeypatch):
    """A failure mid-predict (here: the second batch) removes the partial temporary folder."""
    calls = {"n": 0}
    original = TapRecorder.collect

    def fail_on_second(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated failure mid-extraction")
        return original(self)

    monkeypatch.setattr(TapRecorder, "collect", fail_on_second)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(compose_cfg(tmp_path, image_folder, *TINY, "dataset.batch_size=4"), tmp_path / "run")
    assert not [p for p in (tmp_path / "cache").iterdir()], "no entry and no temporary folder"


def test_fne_inputs_are_cached_as_int8_and_reused_by_a_c_sweep(tmp_path, image_folder, monkeypatch):
    first = run(compose_cfg(tmp_path, image_folder, *TINY), tmp_path / "run1")
    assert first.postprocess["cache"] == "miss"
    prepared = cache_entries(tmp_path / "cache", prepared=True)
    assert len(prepared) == 2  # train and test
    for folder in prepared:
        entry = read_entry(folder)
        assert entry.features.dtype == np.int8 and set(np.unique(entry.features)) <= {-1, 0, 1}
        assert (folder / "features.npy").stat().st_size == 128 + entry.features.size  # one byte per feature

    def no_standardization(*args, **kwargs):
        raise AssertionError("a C sweep point on cached FNE inputs must not standardize again")

    monkeypatch.setattr(postprocess_module.FeaturePostprocess, "fit", no_standardization)
    second = run(compose_cfg(tmp_path, image_folder, *TINY, "classifier.C=0.5"), tmp_path / "run2")
    monkeypatch.undo()
    assert second.cache == {"train": "hit", "test": "hit"} and second.postprocess["cache"] == "hit"
    fresh = run(
        compose_cfg(tmp_path / "fresh", image_folder, *TINY, "classifier.C=0.5", "cache=false"), tmp_path / "run3"
    )
    assert second.metrics == fresh.metrics
    assert {k: v for k, v in second.postprocess.items() if k != "cache"} == fresh.postprocess


def test_fne_inputs_are_made_anew_when_a_raw_split_is_extracted_again(tmp_path, image_folder):
    """A split extracted again under the same key (skipped images that decode again) is a new
    stored version; int8 inputs made from the old version are not reused."""
    first = run(compose_cfg(tmp_path, image_folder, *TINY), tmp_path / "run1")
    store = FeatureStore(tmp_path / "cache")
    (train_link,) = [p for p in cache_entries(tmp_path / "cache") if read_json(p / "meta.json")["split"] == "train"]
    old = read_entry(train_link)
    changed = FeatureSet(np.asarray(old.features) * -1, old.labels, old.indices, old.skipped, old.layout)
    store.save(train_link.name, changed, {"split": "train"})  # what a re-extraction commits
    second = run(compose_cfg(tmp_path, image_folder, *TINY, "overwrite=true"), tmp_path / "run2")
    assert second.cache == {"train": "hit", "test": "hit"}
    assert (first.postprocess["cache"], second.postprocess["cache"]) == ("miss", "miss")
    third = run(compose_cfg(tmp_path, image_folder, *TINY), tmp_path / "run3")
    assert third.postprocess["cache"] == "hit" and third.metrics == second.metrics
