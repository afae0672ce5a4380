"""Datasets: the registry, the LightningDataModule, transforms and one module per dataset family."""

import importlib
import pkgutil

from tlbench.data.datamodule import TransferDataModule
from tlbench.data.registry import available_datasets, build_dataset, dataset_info, register_dataset

# Modules that are infrastructure; every other module in this package defines datasets and
# registers them on import.
_INFRASTRUCTURE = {
    "datamodule",
    "download",
    "images",
    "layout",
    "registry",
    "samples",
    "split_files",
    "splits",
    "transforms",
    "verify",
}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TransferDataModule", "available_datasets", "build_dataset", "dataset_info", "register_dataset"]
