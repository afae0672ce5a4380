"""Evaluation transforms from the backbone's pretrained data config (timm's own machinery)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import timm.data
from torch import nn


def resolve_data_config(model: nn.Module, overrides: Mapping | None = None) -> dict:
    """timm's data config for `model` (input size, interpolation, mean, std, crop), then overrides."""
    config = dict(timm.data.resolve_model_data_config(model))
    for key, value in (overrides or {}).items():
        if value is None:  # unset in the config: keep the model's own value
            continue
        config[key] = tuple(value) if isinstance(value, list | tuple) else value
    return config


def eval_transform(data_config: Mapping) -> Callable:
    """Resize, center-crop, to tensor, normalize: the deterministic transform used for extraction."""
    return timm.data.create_transform(**data_config, is_training=False)


def train_augmentation(data_config: Mapping, augment: Mapping) -> Callable:
    """timm's training transform (random resized crop, flip, optional colour jitter / AutoAugment)
    at the backbone's input size and normalization."""
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in augment.items() if v is not None}
    config = {k: v for k, v in data_config.items() if k in ("input_size", "interpolation", "mean", "std")}
    return timm.data.create_transform(**config, is_training=True, **options)
