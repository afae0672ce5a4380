"""Datasets: the registry, the LightningDataModule, transforms, and one module per dataset family in
`tlbench.data.datasets`."""

from tlbench.data import datasets  # noqa: F401  (importing the modules registers every dataset)
from tlbench.data.build import build_dataset
from tlbench.data.datamodule import TransferDataModule
from tlbench.data.registry import available_datasets, dataset_info, register_dataset

__all__ = ["TransferDataModule", "available_datasets", "build_dataset", "dataset_info", "register_dataset"]
