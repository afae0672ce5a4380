"""The Caffe input convention (model.preprocessing=caffe): BGR in 0-255 minus a per-channel mean.

By construction: a VGG16 whose first conv is folded for the scale, the channel order and the mean
gives, read with caffe preprocessing, the features of the original weights read with torchvision
preprocessing."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image

from tlbench.cli import config_dir
from tlbench.data import TransferDataModule
from tlbench.data.transforms import RGBToBGR, eval_transform, train_augmentation
from tlbench.embedding.hooks import TapRecorder
from tlbench.errors import ConfigError
from tlbench.models import create_backbone, resolve_taps
from tlbench.models.data_config import KERAS_CAFFE_MEAN

SIZE = [3, 64, 64]  # VGG16's adaptive avgpool keeps fc6 / fc7 working at 64 x 64
# Per-channel mean (BGR) of CSAILVision/places365 places365CNN_mean.binaryproto
PLACES365_MEAN = (104.051, 112.514, 116.676)


def to_caffe_convention(
    state: dict[str, torch.Tensor], mean: tuple, std: tuple, caffe_mean: tuple
) -> dict[str, torch.Tensor]:
    """The VGG16 state dict that reads BGR 0-255 minus `caffe_mean` (BGR) where `state` reads
    ((RGB / 255) - mean) / std. With p the RGB pixel and y[2 - c] = p[c] - caffe_mean[2 - c]:
    x[c] = (y[2 - c] + caffe_mean[2 - c] - 255 mean[c]) / (255 std[c]), so the weights of input
    channel c go to 2 - c divided by 255 std[c], and the constant term moves into the bias."""
    weight, bias = state["features.0.weight"].double(), state["features.0.bias"].double()
    scale = 1 / (255 * torch.tensor(std, dtype=torch.float64))
    scaled = weight * scale[None, :, None, None]
    offset = torch.tensor(caffe_mean, dtype=torch.float64).flip(0) - 255 * torch.tensor(mean, dtype=torch.float64)
    converted = dict(state)
    converted["features.0.weight"] = scaled.flip(1).float()
    converted["features.0.bias"] = (bias + (scaled.sum(dim=(2, 3)) * offset).sum(dim=1)).float()
    return converted


@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).state_dict()


def fne_features(weights, root, **convention) -> np.ndarray:
    """The 12,416 FNE features of the test split, through tlbench's transform, loader and tap hooks."""
    backbone = create_backbone(
        "vgg16", "torchvision", weights=str(weights), data_config={"input_size": SIZE}, **convention
    )
    taps = resolve_taps(backbone.model, "vgg16_fne", backbone.head)
    data = TransferDataModule(
        "imagefolder", transform=eval_transform(backbone.data_config), input_size=SIZE, root=root, batch_size=9
    )
    recorder = TapRecorder(backbone.model, taps)
    rows = []
    with torch.inference_mode():
        for batch in data.loader("test"):
            backbone.model(batch["image"])
            rows.append(recorder.collect().numpy())
    recorder.remove()
    return np.concatenate(rows)


def test_caffe_weights_with_caffe_preprocessing_give_the_original_features(tmp_path, image_folder, vgg16_state):
    """Exact when caffe_mean = 255 x the torchvision mean (BGR): the zero padding of the first conv
    then means the same pixel in both spaces. 64 px inputs, all 15 FNE taps (13 convs, fc6, fc7)."""
    plain = create_backbone("vgg16", "torchvision", pretrained=False, data_config={"input_size": SIZE})
    mean, std = plain.data_config["mean"], plain.data_config["std"]
    assert np.allclose(mean, (0.485, 0.456, 0.406)) and np.allclose(std, (0.229, 0.224, 0.225))
    caffe_mean = tuple(255 * m for m in reversed(mean))
    torch.save(vgg16_state, tmp_path / "torchvision.pth")
    torch.save(to_caffe_convention(vgg16_state, mean, std, caffe_mean), tmp_path / "caffe.pth")

    original = fne_features(tmp_path / "torchvision.pth", image_folder)
    converted = fne_features(tmp_path / "caffe.pth", image_folder, preprocessing="caffe", caffe_mean=caffe_mean)
    assert original.shape == (9, 12_416) and np.abs(original).max() > 0
    largest = float(np.abs(original).max())
    print(f"max |difference| {np.abs(converted - original).max():.2e}, largest |feature| {largest:.2e}")
    np.testing.assert_allclose(converted, original, rtol=1e-4, atol=1e-5 * largest)  # float32 rounding
    # torchvision preprocessing on the folded weights is wrong by ~255x and a channel swap
    wrong = fne_features(tmp_path / "caffe.pth", image_folder)
    assert not np.allclose(wrong, original, rtol=1e-2, atol=1e-2 * largest)


def test_bias_fold_for_another_mean_is_exact_away_from_the_border(vgg16_state):
    """With another mean than 255 x torchvision's (here the Places365 one) the fold moves the
    difference into the bias: first-conv outputs agree except on the one-pixel border, where zero
    padding stands for another pixel in each space."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    converted = to_caffe_convention(vgg16_state, mean, std, PLACES365_MEAN)
    pixels = torch.randint(0, 256, (2, 3, 20, 20)).float()  # RGB 0-255
    torchvision_input = (pixels / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    caffe_input = (pixels - torch.tensor(PLACES365_MEAN).flip(0)[:, None, None]).flip(1)
    expected = torch.nn.functional.conv2d(
        torchvision_input, vgg16_state["features.0.weight"], vgg16_state["features.0.bias"], padding=1
    )
    got = torch.nn.functional.conv2d(
        caffe_input, converted["features.0.weight"], converted["features.0.bias"], padding=1
    )
    torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got[..., 0, :], expected[..., 0, :], rtol=1e-4, atol=1e-4)


def solid(rgb: tuple[int, int, int], size: int = 16) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), rgb, dtype=np.uint8))


def test_caffe_transform_gives_bgr_0_255_minus_the_mean():
    backbone = create_backbone(
        "vgg16",
        "torchvision",
        pretrained=False,
        data_config={"input_size": [3, 16, 16], "crop_pct": 1.0},
        preprocessing="caffe",
    )
    transform = eval_transform(backbone.data_config)
    assert isinstance(transform.transforms[-1], RGBToBGR)
    out = transform(solid((200, 100, 50)))
    assert out.shape == (3, 16, 16)
    # B, G, R minus the Keras "caffe" mean (103.939, 116.779, 123.68), worked by hand
    expected = torch.tensor([50 - 103.939, 100 - 116.779, 200 - 123.68])
    torch.testing.assert_close(out, expected[:, None, None].expand(3, 16, 16), rtol=0, atol=1e-3)

    # a pixel pattern: per pixel, the channels are reversed and shifted, nothing is blurred
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = transform(Image.fromarray(pixels))
    expected = torch.from_numpy(pixels[..., ::-1].astype(np.float32) - np.array(KERAS_CAFFE_MEAN, dtype=np.float32))
    torch.testing.assert_close(out, expected.permute(2, 0, 1), rtol=0, atol=1e-3)

    # fine-tuning reads the same convention: a full-image crop of a solid colour, no flip
    augment = {"hflip": 0.0, "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "color_jitter": 0.0}
    train = train_augmentation(backbone.data_config, augment)
    assert isinstance(train.transforms[-1], RGBToBGR)
    torch.testing.assert_close(train(solid((10, 20, 30))), transform(solid((10, 20, 30))), rtol=0, atol=1e-3)


def test_places365_mean_and_what_results_and_cache_keys_record():
    caffe = create_backbone("vgg16", "torchvision", pretrained=False, preprocessing="caffe", caffe_mean=PLACES365_MEAN)
    plain = create_backbone("vgg16", "torchvision", pretrained=False)
    assert caffe.data_config["caffe_mean"] == PLACES365_MEAN
    assert caffe.data_config["mean"] == pytest.approx([116.676 / 255, 112.514 / 255, 104.051 / 255])
    assert caffe.data_config["std"] == pytest.approx([1 / 255] * 3)
    assert caffe.describe()["preprocessing"] == "caffe"
    assert caffe.describe()["data_config"]["caffe_mean"] == list(PLACES365_MEAN)
    # torchvision adds no key to the data config: feature caches made before keep their keys
    assert "preprocessing" not in plain.data_config and plain.describe()["preprocessing"] == "torchvision"
    # both parts of the extraction key differ: the data config and the transform's repr
    assert caffe.data_config != plain.data_config
    assert repr(eval_transform(caffe.data_config)) != repr(eval_transform(plain.data_config))
    assert "RGBToBGR()" in repr(eval_transform(caffe.data_config))


def test_caffe_replaces_a_source_default_normalization():
    """efficientnet_lite0's packaged weights normalize with 0.5 / 0.5; caffe sets its own."""
    backbone = create_backbone(
        "efficientnet_lite0", "efficientnet_lite0_package", pretrained=False, preprocessing="caffe"
    )
    assert backbone.data_config["std"] == pytest.approx([1 / 255] * 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preprocessing": "bgr"}, "model.preprocessing must be one of torchvision, caffe, not 'bgr'"),
        ({"preprocessing": "caffe", "caffe_mean": [0.406, 0.456, 0.485]}, "BGR order on the 0-255 scale"),
        ({"preprocessing": "caffe", "caffe_mean": [104.0, 117.0]}, "three values"),
        ({"preprocessing": "caffe", "data_config": {"mean": [0.5, 0.5, 0.5]}}, "leave model.data_config.mean null"),
    ],
)
def test_bad_convention_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_backbone("vgg16", "torchvision", pretrained=False, **kwargs)


@pytest.mark.parametrize("name", ["vgg16", "timm", "efficientnet_lite0"])
def test_every_model_config_has_the_convention_keys(name):
    cfg = OmegaConf.load(config_dir() / "model" / f"{name}.yaml")
    assert cfg.preprocessing == "torchvision"
    assert list(cfg.caffe_mean) == list(KERAS_CAFFE_MEAN)
