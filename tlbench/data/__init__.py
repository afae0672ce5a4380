"""Datasets: the registry, the LightningDataModule, transforms and one module per dataset family."""

from tlbench.data import digits, imagefolder  # noqa: F401  (registers the datasets)
from tlbench.data.datamodule import TransferDataModule
from tlbench.data.registry import available_datasets, build_dataset, register_dataset

__all__ = ["TransferDataModule", "available_datasets", "build_dataset", "register_dataset"]
