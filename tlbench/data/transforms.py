"""Evaluation and training transforms from the backbone's data config (timm's own machinery), in
the input convention of the weights: torchvision's (RGB in [0, 1], then mean/std) or Caffe's (BGR
in 0-255 minus a per-channel mean, no std)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import timm.data
import torch
from torch import nn
from torchvision import transforms as T

from tlbench.errors import ConfigError

PREPROCESSING = ("torchvision", "caffe")

# keras.applications.imagenet_utils.preprocess_input(mode="caffe"), the preprocessing of
# keras.applications.vgg16 (the VGG team's Caffe weights, ported): BGR order, 0-255 scale.
# https://github.com/keras-team/keras/blob/master/keras/src/applications/imagenet_utils.py
KERAS_CAFFE_MEAN = (103.939, 116.779, 123.68)

# Keys tlbench adds to timm's data config; timm's create_transform does not take them.
CONVENTION_KEYS = ("preprocessing", "caffe_mean")


class RGBToBGR:
    """Reverse the channel axis of a (..., 3, H, W) tensor: Caffe-trained weights read BGR."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def resolve_data_config(model: nn.Module, overrides: Mapping | None = None) -> dict:
    """timm's data config for `model` (input size, interpolation, mean, std, crop), then overrides."""
    config = dict(timm.data.resolve_model_data_config(model))
    for key, value in (overrides or {}).items():
        if value is None:  # unset in the config: keep the model's own value
            continue
        config[key] = tuple(value) if isinstance(value, list | tuple) else value
    return config


def convention(preprocessing: str, caffe_mean: Sequence[float] | None = None, overrides: Mapping | None = None) -> dict:
    """The data config entries of an input convention. "torchvision" adds nothing (the config's
    mean/std apply, and existing feature caches keep their keys). "caffe" normalizes with
    mean = caffe_mean (RGB order) / 255 and std = 1/255, so Normalize computes 255·x − caffe_mean,
    and records the convention so that the transforms append the RGB -> BGR flip."""
    if preprocessing not in PREPROCESSING:
        raise ConfigError(f"model.preprocessing must be one of {', '.join(PREPROCESSING)}, not {preprocessing!r}")
    if preprocessing == "torchvision":
        return {}
    clash = [k for k in ("mean", "std") if (overrides or {}).get(k) is not None]
    if clash:
        raise ConfigError(
            f"model.preprocessing=caffe sets the normalization from model.caffe_mean; "
            f"leave model.data_config.{' and model.data_config.'.join(clash)} null"
        )
    bgr = tuple(float(v) for v in (KERAS_CAFFE_MEAN if caffe_mean is None else caffe_mean))
    if len(bgr) != 3 or not all(0 <= v <= 255 for v in bgr) or max(bgr) <= 1:
        raise ConfigError(
            f"model.caffe_mean must be three values in BGR order on the 0-255 scale "
            f"(e.g. {list(KERAS_CAFFE_MEAN)}), not {list(caffe_mean or [])}"
        )
    return {
        "mean": tuple(v / 255 for v in reversed(bgr)),  # Normalize runs before the flip: RGB order
        "std": (1 / 255,) * 3,
        "preprocessing": "caffe",
        "caffe_mean": bgr,
    }


def _in_convention(transform: Callable, data_config: Mapping) -> Callable:
    if data_config.get("preprocessing", "torchvision") != "caffe":
        return transform
    steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
    return T.Compose([*steps, RGBToBGR()])


def eval_transform(data_config: Mapping) -> Callable:
    """Resize, center-crop, to tensor, normalize (then RGB -> BGR for Caffe-convention weights):
    the deterministic transform used for extraction."""
    timm_config = {k: v for k, v in data_config.items() if k not in CONVENTION_KEYS}
    return _in_convention(timm.data.create_transform(**timm_config, is_training=False), data_config)


def train_augmentation(data_config: Mapping, augment: Mapping) -> Callable:
    """timm's training transform (random resized crop, flip, optional colour jitter / AutoAugment)
    at the backbone's input size, normalization and channel order."""
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in augment.items() if v is not None}
    config = {k: v for k, v in data_config.items() if k in ("input_size", "interpolation", "mean", "std")}
    return _in_convention(timm.data.create_transform(**config, is_training=True, **options), data_config)
