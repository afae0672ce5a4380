"""The `transformer_blocks` tap rule on timm ViTs (random weights, tiny configs, no download): which
taps, their values against the blocks run by hand, their names, the warning of the CNN rule on a
ViT, and a layer curve end to end."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
import torchvision
from conftest import colour_folder, read_json, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from tlbench.analysis.few_shot import check_method_names
from tlbench.cli import config_dir
from tlbench.embedding.hooks import TapRecorder, feature_layout
from tlbench.errors import ConfigError
from tlbench.models.taps import Tap, resolve_taps, token_layout

SIZE = 32
# timm's ViT-Ti/16 shrunk: 32 px images in 8 px patches (16 patch tokens), 3 blocks of width 192.
TINY = {"img_size": SIZE, "patch_size": 8, "depth": 3}
VARIANTS = {
    "cls": {},  # token pooling, final norm: the standard ViT
    "cls+registers": {"reg_tokens": 4},  # DINOv2-style: 1 class + 4 register tokens before the patches
    "avg": {"class_token": False, "global_pool": "avg"},  # no prefix at all; fc_norm after pooling
    "avg+registers": {"class_token": False, "global_pool": "avg", "reg_tokens": 2},
}


def tiny_vit(variant: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY, **VARIANTS[variant]).eval()


def blocks_by_hand(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after each block, the last through the final norm: timm's
    VisionTransformer.forward_features unrolled."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
    outputs = []
    for block in model.blocks:
        x = block(x)
        outputs.append(x)
    outputs[-1] = model.norm(outputs[-1])
    return outputs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_taps_per_block_with_a_class_token_one_without_each_embed_dim_wide(variant):
    model = tiny_vit(variant)
    taps = resolve_taps(model, "transformer_blocks", head="head")
    depth, width = len(model.blocks), model.embed_dim
    per_block = 2 if model.has_class_token else 1
    assert len(taps) == depth * per_block
    assert model.num_prefix_tokens == int(model.has_class_token) + model.num_reg_tokens
    assert token_layout(model).prefix == model.num_prefix_tokens
    # the final norm is read instead of the last block when forward_features applies one
    has_norm = not isinstance(model.norm, nn.Identity)
    modules = [f"blocks.{i}" for i in range(depth)]
    if has_norm:
        modules[-1] = "norm"
    assert has_norm == (variant.startswith("cls"))  # timm: fc_norm replaces norm under avg pooling
    assert [t.module for t in taps] == [m for m in modules for _ in range(per_block)]
    reads = ["patches", "cls"] if model.has_class_token else ["patches"]  # token pooling: cls last
    assert [t.tokens for t in taps] == reads * depth
    layout = feature_layout(model, taps, (3, SIZE, SIZE))
    assert [name for name, _ in layout] == [str(t) for t in taps]
    assert [dim for _, dim in layout] == [width] * len(taps)
    assert sum(dim for _, dim in layout) == len(taps) * model.num_features


@pytest.mark.parametrize("variant", ["cls+registers", "avg+registers", "cls"])
def test_values_are_token_zero_and_the_mean_of_the_patch_tokens(variant):
    model = tiny_vit(variant)
    prefix = model.num_prefix_tokens
    taps = resolve_taps(model, "transformer_blocks", head="head")
    images = torch.randn(3, 3, SIZE, SIZE)
    recorder = TapRecorder(model, taps)
    with torch.no_grad():
        logits = model(images)
        features = recorder.collect()
        expected_outputs = blocks_by_hand(model, images)
    recorder.remove()
    assert expected_outputs[0].shape[1] == prefix + model.patch_embed.num_patches

    expected, column = {}, 0
    for i, out in enumerate(expected_outputs):
        module = "norm" if i == len(expected_outputs) - 1 and variant.startswith("cls") else f"blocks.{i}"
        expected[f"{module}:cls"] = out[:, 0]
        expected[f"{module}:patches"] = out[:, prefix:].mean(dim=1)
        if prefix:  # the prefix tokens are left out: the mean over all tokens is another vector
            assert not torch.allclose(out[:, prefix:].mean(dim=1), out.mean(dim=1), atol=1e-3)
    for (name, dim), tap in zip(recorder.layout, taps, strict=True):
        assert name == str(tap)
        torch.testing.assert_close(features[:, column : column + dim], expected[name], rtol=1e-5, atol=1e-5)
        column += dim
    assert column == features.shape[1]

    if variant.startswith("cls"):  # token pooling: the last tap is what the head reads (the penultimate)
        with torch.no_grad():
            pre_logits = model.forward_head(model.forward_features(images), pre_logits=True)
        torch.testing.assert_close(features[:, -model.embed_dim :], pre_logits)
        torch.testing.assert_close(model.head(features[:, -model.embed_dim :]), logits)


def test_tap_names_parse_back_to_the_same_taps():
    model = tiny_vit("cls+registers")
    preset = resolve_taps(model, "transformer_blocks", head="head")
    assert resolve_taps(model, ["blocks.1:cls"], "head") == [Tap("blocks.1", tokens="cls")]
    assert Tap("blocks.1", tokens="cls") in preset
    assert resolve_taps(model, [str(t) for t in preset], "head") == preset
    assert [str(t) for t in preset[:2]] == ["blocks.0:patches", "blocks.0:cls"]
    assert str(resolve_taps(model, ["blocks.0:input"], "head")[0]) == "blocks.0:input"  # the other suffixes stay
    assert str(resolve_taps(model, ["blocks.0"], "head")[0]) == "blocks.0"
    # analysis.few_shot.methods=[layer:blocks.1:cls] names a tap of the run
    check_method_names(["fne", "layer:blocks.1:cls", "layer:norm:patches"], [str(t) for t in preset])
    with pytest.raises(ConfigError, match="unknown method"):
        check_method_names(["layer:blocks.1:patch"], [str(t) for t in preset])

    with pytest.raises(ConfigError, match="no class token"):
        resolve_taps(tiny_vit("avg+registers"), ["blocks.1:cls"], "head")
    with pytest.raises(ConfigError, match=":patches"):
        resolve_taps(model, ["blocks.1:tokens"], "head")
    with pytest.raises(ConfigError, match="taps repeat"):
        resolve_taps(model, ["transformer_blocks", "blocks.1:cls"], "head")
    with pytest.raises(ValueError, match="tokens"):
        Tap("blocks.1", "input", tokens="cls")


def test_token_taps_refuse_models_without_a_known_token_layout():
    cnn = torchvision.models.resnet18(weights=None)
    for spec in ("transformer_blocks", ["layer1.0:patches"]):
        with pytest.raises(ConfigError, match="token transformer"):
            resolve_taps(cnn, spec, "fc")
    # CaiT has num_prefix_tokens, but its blocks hold the patch tokens only (class token added later)
    cait = timm.create_model("cait_xxs24_224", pretrained=False, img_size=SIZE, patch_size=8, depth=2)
    assert cait.num_prefix_tokens == 1
    with pytest.raises(ConfigError, match="Cait is not one"):
        resolve_taps(cait, "transformer_blocks", "head")


def test_activations_on_a_vit_warns_and_points_to_transformer_blocks(caplog):
    model = tiny_vit("cls")
    with caplog.at_level(logging.WARNING, logger="tlbench.models.taps"):
        taps = resolve_taps(model, "activations", head="head")
    assert len(taps) == len(model.blocks)  # one MLP GELU per block: what the warning is about
    assert all(t.module.endswith("mlp.act") for t in taps)
    assert "transformer_blocks" in caplog.text and "MLP" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tlbench.models.taps"):
        resolve_taps(torchvision.models.resnet18(weights=None), "activations", head="fc")
    assert "transformer" not in caplog.text, "a CNN gets no warning"


def test_vit_small_config_builds_the_augreg_vit_with_its_preprocessing():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["model=vit_small", "model.pretrained=false"])
    backbone = instantiate(cfg.model)
    assert backbone.model.pretrained_cfg["tag"] == "augreg_in21k_ft_in1k" and backbone.head == "head"
    config = backbone.data_config
    assert tuple(config["input_size"]) == (3, 224, 224) and config["interpolation"] == "bicubic"
    assert tuple(config["mean"]) == tuple(config["std"]) == (0.5, 0.5, 0.5) and config["crop_pct"] == 0.9
    taps = resolve_taps(backbone.model, backbone.fne_taps, backbone.head)
    assert backbone.fne_taps == "transformer_blocks"
    assert len(taps) == 24 and taps[-1] == Tap("norm", tokens="cls")  # 12 blocks x 2, 9,216 dims
    assert len(taps) * backbone.model.embed_dim == 9_216


def test_layer_curve_of_a_vit_end_to_end(tmp_path):
    folder = colour_folder(tmp_path / "folder", train=4, test=2)
    run_cli(
        tmp_path,
        "model=vit_small",
        "model.name=test_vit",  # timm's 6-block, 64-wide test ViT at 160 px
        "model.pretrained=false",
        "strategy=fne",
        "analysis=[layer_curve]",
        "analysis.layer_curve.resamples=50",
        "dataset=imagefolder",
        f"dataset.root={folder}",
        "dataset.num_workers=0",
        "dataset.batch_size=8",
        "trainer.accelerator=cpu",
        "logger=none",
    )
    result = read_json(tmp_path / "run" / "results.json")
    model = timm.create_model("test_vit", pretrained=False)
    expected = [f"blocks.{i}:{read}" for i in range(5) for read in ("patches", "cls")] + ["norm:patches", "norm:cls"]
    assert len(expected) == 2 * len(model.blocks)
    assert result["taps"] == expected
    assert result["layout"] == [[name, model.embed_dim] for name in expected]
    curve = result["analyses"]["layer_curve"]
    layers = [row for row in curve["rows"] if row["kind"] == "layer"]
    assert [row["tap"] for row in layers] == expected
    assert all(row["dim"] == model.embed_dim for row in layers)
    assert curve["rows"][-1]["kind"] == "full" and curve["rows"][-1]["dim"] == len(expected) * model.embed_dim
    assert curve["last_tap"] == "norm:cls"
    # transferability scores on every read, and the depth baseline counts blocks, not reads
    assert all(set(row["scores"]) == {"logme", "h_score", "knn", "nearest_centroid"} for row in layers)
    picks = {p["predictor"]: p for p in curve["score_picks"]}
    assert picks["depth"]["tap"] == "norm:cls"  # the deepest block's read that the head pools
    assert curve["score_correlations"][0]["predictor"] == "depth"
    assert (tmp_path / "run" / "analysis" / "layer_scores.png").is_file()
