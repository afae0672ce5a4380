"""Evaluation and training transforms from the backbone's data config (`tlbench.models.data_config`), in
the input convention of the weights: torchvision's (RGB in [0, 1], then mean/std) or Caffe's (BGR in 0-255
minus a per-channel mean, no std)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import timm.data
import torch
from torchvision import transforms as T

from tlbench.models.data_config import CONVENTION_KEYS


class RGBToBGR:
    """Reverse the channel axis of a (..., 3, H, W) tensor: Caffe-trained weights read BGR."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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
