"""The dataset registry: a name maps to a builder that returns the dataset's splits, and to what is known
about the dataset before touching its files. Building one by name is `tlbench.data.build.build_dataset`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tlbench.data.samples import ImageSamples
from tlbench.errors import ConfigError


@dataclass(frozen=True)
class Resource:
    """One downloadable file of a dataset, with its published checksum."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    sha1: str | None = None  # where only a SHA-1 is published (MIT67)
    extract: bool = True  # unpack the archive into the root after download
    nested: tuple[str, ...] = ()  # archives inside it (paths under ROOT) to unpack where they lie


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before touching its files: for `tlbench-data list`, errors,
    `verify` and `download`."""

    title: str
    num_classes: int
    metric: str  # "top1" or "mean_per_class": the headline metric
    layout: str  # the expected layout under ROOT, shown in errors
    split_sizes: dict[str, int] = field(default_factory=dict)  # published sizes of the default protocol
    resources: tuple[Resource, ...] = ()  # public downloads; empty when there is none
    instructions: str = ""  # how to get the data by hand (always shown when resources is empty)
    checksums: dict[str, str] = field(default_factory=dict)  # split files: relative path -> md5
    torchvision: str | None = None  # the torchvision class this loader matches, if any
    bundled: bool = False  # the data ships with a Python package: nothing to download


@dataclass
class DatasetSplits:
    """What every builder returns: named splits ("train", "test", maybe "val") and class names."""

    name: str
    classes: list[str]
    splits: dict[str, ImageSamples]
    metric: str = "top1"  # the headline metric for this dataset: "top1" or "mean_per_class"
    params: dict = field(default_factory=dict)  # builder arguments, recorded for the cache key
    root: str | None = None  # the folder the loader resolved ROOT to (split files are relative to it)


Builder = Callable[..., DatasetSplits]
_REGISTRY: dict[str, Builder] = {}
_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, info: DatasetInfo | None = None) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(**params) -> DatasetSplits` available as `dataset=<name>`."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = builder
        if info is not None:
            _INFO[name] = info
        return builder

    return decorate


_LISTINGS: dict[str, Callable[[str | None], ImageSamples]] = {}


def register_listing(name: str) -> Callable:
    """Decorator: `listing(root) -> ImageSamples` of every image in the archive, for datasets whose
    protocols use only part of it (Caltech101's 30 + 50 per class, one SUN397 partition): `verify`
    then decodes them all."""

    def decorate(listing: Callable[[str | None], ImageSamples]) -> Callable[[str | None], ImageSamples]:
        _LISTINGS[name] = listing
        return listing

    return decorate


def complete_listing(name: str) -> Callable[[str | None], ImageSamples] | None:
    return _LISTINGS.get(name)


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def dataset_builder(name: str) -> Builder:
    """The builder registered as `name`; an unknown name is a ConfigError listing the options."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return _REGISTRY[name]


def dataset_info(name: str) -> DatasetInfo | None:
    """The registered metadata of `name` (None for datasets registered without any)."""
    dataset_builder(name)  # an unknown name is an error, not None
    return _INFO.get(name)
