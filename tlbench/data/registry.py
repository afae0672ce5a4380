"""The dataset registry: a name maps to a builder that returns the dataset's splits."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from tlbench.data.samples import ImageSamples
from tlbench.errors import ConfigError


@dataclass
class DatasetSplits:
    """What every builder returns: named splits ("train", "test", maybe "val") and class names."""

    name: str
    classes: list[str]
    splits: dict[str, ImageSamples]
    metric: str = "top1"  # the headline metric for this dataset: "top1" or "mean_per_class"
    params: dict = field(default_factory=dict)  # builder arguments, recorded for the cache key


Builder = Callable[..., DatasetSplits]
_REGISTRY: dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(**params) -> DatasetSplits` available as `dataset=<name>`."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def build_dataset(name: str, **params) -> DatasetSplits:
    """Build a registered dataset; an unknown name or parameter is a ConfigError listing the options."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    builder = _REGISTRY[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take {unknown}; its parameters are {sorted(accepted)}")
    splits = builder(**params)
    splits.params = dict(params)
    return splits
