"""TransferDataModule: train / val (optional) / test of a registered dataset, with the model's transform."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tlbench.data.registry import DatasetSplits, build_dataset
from tlbench.data.samples import ImageSamples, SubsetSamples
from tlbench.data.splits import per_class_subset, stratified_split
from tlbench.errors import ConfigError, ImageDecodeError


@contextlib.contextmanager
def seeded_rng(seed: int | None) -> Iterator[None]:
    """Python's, numpy's and torch's global RNGs seeded for the block and restored after (timm's
    transforms draw from all three: RandAugment picks its ops with numpy); a no-op for seed None."""
    if seed is None:
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class TransformedSplit(Dataset):
    """Applies the transform and carries the dataset index with every sample.

    A file that cannot be decoded yields a zero image with ok=False: the extractor drops it and
    the run lists it, instead of crashing hours into a job.
    """

    def __init__(self, samples: ImageSamples, transform: Callable, input_size: tuple[int, ...]):
        self.samples = samples
        self.transform = transform
        self.input_size = tuple(input_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        # (index, seed) from EpochShuffleSampler: the augmentation draws from its own seed, so it does
        # not depend on which rank or worker loads the sample, nor on what ran before a resume.
        index, seed = item if isinstance(item, tuple) else (item, None)
        label = int(self.samples.labels[index])
        try:
            with seeded_rng(seed):
                image = self.transform(self.samples.load(index))
            ok = True
        except ImageDecodeError:
            image, ok = torch.zeros(self.input_size), False
        return {"image": image, "label": label, "index": index, "ok": ok}


PREFETCH_BATCHES = 4  # per worker: a slow image (a large JPEG, a network file system) does not stall the GPU


class TransferDataModule(pl.LightningDataModule):
    """Builds the splits at construction (cheap: images load lazily) so their sizes and
    fingerprints are known before any forward pass."""

    def __init__(
        self,
        name: str,
        transform: Callable,
        input_size: tuple[int, ...],
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        val_seed: int = 0,
        train_per_class: int | None = None,
        few_shot_seed: int = 0,
        train_transform: Callable | None = None,
        **params: Any,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(
                f"dataset.batch_size must be >= 1 and dataset.num_workers >= 0, got {batch_size} and {num_workers}"
            )
        self.dataset: DatasetSplits = build_dataset(name, **params)
        self.transform = transform
        self.train_transform = train_transform  # augmentation for fine-tuning; extraction uses `transform`
        self.input_size = input_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        if val_fraction and "val" not in self.dataset.splits:
            train = self.dataset.splits["train"]
            kept, held = stratified_split(train.labels, val_fraction, val_seed, what="validation holdout")
            self.dataset.splits["train"] = SubsetSamples(train, kept)
            self.dataset.splits["val"] = SubsetSamples(train, held)
        if train_per_class:
            # Drawn after the validation holdout, so val stays the same across shot counts.
            train = self.dataset.splits["train"]
            self.dataset.splits["train"] = SubsetSamples(
                train, per_class_subset(train.labels, train_per_class, few_shot_seed)
            )

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def split_names(self) -> list[str]:
        return [s for s in ("train", "val", "test") if s in self.dataset.splits]

    def split_sizes(self) -> dict[str, int]:
        return {s: len(self.dataset.splits[s]) for s in self.split_names}

    def loader(
        self, split: str, training: bool = False, sampler: Sampler | None = None, world_size: int = 1
    ) -> DataLoader:
        """Deterministic, ordered batches with the eval transform; `training`: shuffled, augmented.
        `sampler` (tlbench.distributed.samplers) replaces the order; `world_size` ranks share it."""
        transform = self.train_transform if training and self.train_transform is not None else self.transform
        dataset = TransformedSplit(self.dataset.splits[split], transform, self.input_size)
        per_rank = math.ceil(len(dataset) / world_size)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            # a last batch of one image breaks BatchNorm in training; keep at least one batch per rank
            drop_last=training and per_rank > self.batch_size,
            num_workers=self.num_workers,
            # workers live across the epochs of fine-tuning; an extraction loader is read once
            persistent_workers=training and self.num_workers > 0,
            prefetch_factor=PREFETCH_BATCHES if self.num_workers > 0 else None,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return [self.loader(split) for split in self.split_names]
