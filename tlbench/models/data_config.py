"""A backbone's data config: timm's resolution of input size, interpolation, mean, std and crop for the
model, then the input convention of its weights (torchvision's RGB in [0, 1] with mean/std, or Caffe's BGR
in 0-255 minus a per-channel mean). The transforms in `tlbench.data.transforms` are built from it.

Here, not in tlbench.data, because it is a property of the model and its weights: models/ needs it when it
creates a backbone, and must not depend on the data package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import timm.data
from torch import nn

from tlbench.errors import ConfigError

PREPROCESSING = ("torchvision", "caffe")

# keras.applications.imagenet_utils.preprocess_input(mode="caffe"), the preprocessing of
# keras.applications.vgg16 (the VGG team's Caffe weights, ported): BGR order, 0-255 scale.
# https://github.com/keras-team/keras/blob/master/keras/src/applications/imagenet_utils.py
KERAS_CAFFE_MEAN = (103.939, 116.779, 123.68)

# Keys tlbench adds to timm's data config; timm's create_transform does not take them.
CONVENTION_KEYS = ("preprocessing", "caffe_mean")


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
