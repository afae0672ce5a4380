"""Building a registered dataset by name: check the parameters, run the builder, require the files it lists.

Apart from the registry because the file check needs `layout`, which itself reads the registry's metadata
for its error messages.
"""

from __future__ import annotations

import inspect

from tlbench.data.layout import require_listed_files
from tlbench.data.registry import DatasetSplits, dataset_builder, dataset_info
from tlbench.errors import ConfigError


def build_dataset(name: str, **params) -> DatasetSplits:
    """Build a registered dataset; an unknown name or parameter is a ConfigError listing the options."""
    builder = dataset_builder(name)
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take {unknown}; its parameters are {sorted(accepted)}")
    splits = builder(**params)
    require_listed_files(splits, params.get("root"))
    splits.params = dict(params)
    info = dataset_info(name)
    if info is not None:
        splits.metric = info.metric
    return splits
