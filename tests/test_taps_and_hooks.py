"""Taps (which layers are read) and the hooks that pool them."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from tlbench.embedding.hooks import TapRecorder, feature_layout, reduce_activation
from tlbench.errors import ConfigError
from tlbench.models.taps import VGG16_FNE_DIM, Tap, resolve_taps


@pytest.fixture(scope="module")
def vgg16() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()


def test_vgg16_fne_preset_is_12416_dims_of_post_relu_outputs(vgg16):
    taps = resolve_taps(vgg16, "vgg16_fne", head="classifier.6")
    assert len(taps) == 15
    assert all(isinstance(vgg16.get_submodule(t.module), nn.ReLU) for t in taps)
    layout = feature_layout(vgg16, taps, (3, 224, 224))
    dims = [d for _, d in layout]
    assert dims == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 4096, 4096]
    assert sum(dims) == VGG16_FNE_DIM == 12_416


def test_vgg16_fc_presets_and_penultimate(vgg16):
    assert [str(t) for t in resolve_taps(vgg16, "fc6", "classifier.6")] == ["classifier.1"]
    assert [str(t) for t in resolve_taps(vgg16, "fc7", "classifier.6")] == ["classifier.4"]
    penultimate = resolve_taps(vgg16, "penultimate", "classifier.6")
    assert penultimate == [Tap("classifier.6", "input")]
    # In eval mode the input of fc8 is fc7's ReLU output (dropout is the identity).
    x = torch.randn(2, 3, 224, 224)
    rec_pen, rec_fc7 = TapRecorder(vgg16, penultimate), TapRecorder(vgg16, resolve_taps(vgg16, "fc7", "x"))
    with torch.no_grad():
        vgg16(x)
    torch.testing.assert_close(rec_pen.collect(), rec_fc7.collect())
    rec_pen.remove()
    rec_fc7.remove()


def test_vgg16_preset_refuses_another_layout():
    model = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(ConfigError, match="VGG16"):
        resolve_taps(model, "vgg16_fne", head="fc")


def test_hooked_features_equal_a_manual_forward_despite_inplace_relu(vgg16):
    """features.0 is the conv before the in-place ReLU features.1: the hook must read the
    pre-ReLU value, reduced before the ReLU overwrites it."""
    taps = [Tap("features.0"), Tap("features.1"), Tap("features.29"), Tap("classifier.4")]
    recorder = TapRecorder(vgg16, taps)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        vgg16(x)
        got = recorder.collect()
        conv1 = vgg16.features[0](x)
        expected_pre = conv1.mean(dim=(2, 3))
        expected_post = torch.relu(conv1).mean(dim=(2, 3))
        conv5 = vgg16.features[:30](x)
        flat = torch.flatten(vgg16.avgpool(vgg16.features[30](conv5)), 1)
        fc7 = vgg16.classifier[:5](flat)
    recorder.remove()
    expected = torch.cat([expected_pre, expected_post, conv5.mean(dim=(2, 3)), fc7], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got[:, :64] < 0).any(), "pre-ReLU conv output must keep its negative values"
    assert recorder.layout == [("features.0", 64), ("features.1", 64), ("features.29", 512), ("classifier.4", 4096)]


def test_generic_activation_rule_on_timm_efficientnet_lite0():
    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    taps = resolve_taps(model, "activations", head="classifier")
    activations = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU6)]
    assert [t.module for t in taps] == activations
    assert taps[0].module == "bn1.act" and taps[-1].module == "bn2.act"
    layout = feature_layout(model, taps, (3, 96, 96))
    assert layout[-1] == ("bn2.act", 1280)  # the last activation feeds the global pool


def test_module_called_twice_gives_one_tap_per_call():
    model = torchvision.models.resnet18(weights=None).eval()
    taps = resolve_taps(model, ["layer1.0.relu"], head="fc")
    layout = feature_layout(model, taps, (3, 64, 64))
    assert layout == [("layer1.0.relu", 64), ("layer1.0.relu#1", 64)]


def test_unknown_tap_names_similar_modules(vgg16):
    with pytest.raises(ConfigError, match=r"unknown tap 'features\.99'.*Similar"):
        resolve_taps(vgg16, ["features.99"], head="classifier.6")
    with pytest.raises(ConfigError, match="repeat"):
        resolve_taps(vgg16, ["fc6", "classifier.1"], head="classifier.6")


def test_reduce_activation_shapes():
    assert reduce_activation(torch.ones(2, 5, 3, 3)).shape == (2, 5)
    assert reduce_activation(torch.ones(2, 7, 4)).shape == (2, 4)
    x = torch.randn(2, 6)
    out = reduce_activation(x)
    x.zero_()  # later in-place ops must not change what was recorded
    assert out.abs().sum() > 0


def test_generic_rule_on_convnext_reads_timm_gelu_on_channels_last_maps():
    """ConvNeXt applies timm's own GELU class to NHWC maps inside its MLPs: each tap must give
    one value per channel (the MLP's hidden width), not per row."""
    model = timm.create_model("convnext_tiny", pretrained=False).eval()
    taps = resolve_taps(model, "activations", head="head.fc")
    gelus = [n for n, m in model.named_modules() if type(m).__name__ == "GELU"]
    assert [t.module for t in taps] == gelus and len(gelus) == 18
    layout = dict(feature_layout(model, taps, (3, 64, 64)))
    for tap in taps:
        fc1 = model.get_submodule(tap.module.rsplit(".", 1)[0] + ".fc1")
        assert layout[tap.module] == fc1.out_features
    linear = feature_layout(model, resolve_taps(model, ["stages.1.blocks.0.mlp.fc1"], "head.fc"), (3, 64, 64))
    assert linear == [("stages.1.blocks.0.mlp.fc1", 768)]


def test_vgg16_pre_relu_preset(vgg16):
    taps = resolve_taps(vgg16, "vgg16_fne_pre_relu", head="classifier.6")
    assert all(isinstance(vgg16.get_submodule(t.module), nn.Conv2d | nn.Linear) for t in taps)
    recorder = TapRecorder(vgg16, taps)
    with torch.no_grad():
        vgg16(torch.randn(2, 3, 64, 64))
    features = recorder.collect()
    recorder.remove()
    assert features.shape == (2, VGG16_FNE_DIM)
    assert (features < 0).any(), "values before the ReLU can be negative"
