"""TransferDataModule: train / val (optional) / test of a registered dataset, with the model's transform."""

from __future__ import annotations

import contextlib
import logging
import numbers
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from tlbench.data.build import build_dataset
from tlbench.data.registry import DatasetSplits
from tlbench.data.samples import ImageSamples, SubsetSamples
from tlbench.data.subsets import SplitSubset, per_class_subset, stratified_split
from tlbench.distributed.samplers import EpochShuffleSampler, ShardSampler, TrainingBatches
from tlbench.errors import ConfigError, ImageDecodeError

log = logging.getLogger(__name__)


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


def check_loader_settings(
    batch_size: Any = 64,
    num_workers: Any = 0,
    val_fraction: Any = 0.0,
    val_seed: Any = 0,
    train_per_class: Any = None,
    few_shot_seed: Any = 0,
) -> None:
    """The dataset group's loading settings, refused with a ConfigError naming the key before any
    dataset is read. null means "off" where a setting can be off; 0 is never taken for "off" except
    for val_fraction (0.0, the configs' default, holds out nothing)."""
    check_whole("dataset.batch_size", batch_size, 1, "images per batch (per rank)")
    check_whole("dataset.num_workers", num_workers, 0, "DataLoader worker processes per rank")
    check_whole("dataset.val_seed", val_seed, 0)
    check_whole("dataset.few_shot_seed", few_shot_seed, 0)
    if train_per_class is not None:
        check_whole(
            "dataset.train_per_class",
            train_per_class,
            1,
            "training images per class; null uses every training image",
        )
    if val_fraction is not None and (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not (val_fraction == 0 or 0 < val_fraction < 1)
    ):
        raise ConfigError(
            f"dataset.val_fraction must lie strictly between 0 and 1 (the share of train held out for "
            f"validation), or be 0 or null for no holdout; got {val_fraction!r}"
        )


def check_whole(key: str, value: Any, minimum: int, meaning: str = "") -> None:
    """A whole-number config value >= minimum, or a ConfigError naming the key (fine-tuning uses it too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = f" ({meaning})" if meaning else ""
        raise ConfigError(f"{key} must be >= {minimum}, a whole number{what}; got {value!r}")


PREFETCH_BATCHES = 4  # per worker: a slow image (a large JPEG, a network file system) does not stall the GPU


class TransferDataModule(pl.LightningDataModule):
    """One dataset's splits and their loaders. `setup()` builds the splits (cheap: images load
    lazily); it runs on first use of `dataset`, since run.py needs the splits' sizes and fingerprints
    before any Trainer exists, and Lightning's own call (trainer.fit(..., datamodule=...)) then finds
    them built. `shuffle_seed`: fine-tuning's training order, drawn per (seed, epoch) and dealt to the
    ranks (EpochShuffleSampler), so a resumed run sees the images in the order a straight one would."""

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
        shuffle_seed: int | None = None,
        **params: Any,
    ) -> None:
        super().__init__()
        check_loader_settings(
            batch_size=batch_size,
            num_workers=num_workers,
            val_fraction=val_fraction,
            val_seed=val_seed,
            train_per_class=train_per_class,
            few_shot_seed=few_shot_seed,
        )
        self.name = name
        self.params = params
        self.transform = transform
        self.train_transform = train_transform  # augmentation for fine-tuning; extraction uses `transform`
        self.input_size = input_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.val_seed = val_seed
        self.train_per_class = train_per_class
        self.few_shot_seed = few_shot_seed
        self.shuffle_seed = shuffle_seed
        self._dataset: DatasetSplits | None = None
        self._sources: dict[str, ImageSamples] = {}
        self._subsets: dict[str, SplitSubset] = {}

    @property
    def dataset(self) -> DatasetSplits:
        if self._dataset is None:
            self.setup()
        assert self._dataset is not None
        return self._dataset

    def setup(self, stage: str | None = None) -> None:
        """Build the splits once: the dataset's own (the sources), then the validation holdout, then
        the few-shot subset. Those two are rows of the source train split (`subsets`): fine-tuning
        loads their images, extraction extracts the source once and selects the rows from its features."""
        if self._dataset is not None:
            return
        dataset = build_dataset(self.name, **self.params)
        self._sources = dict(dataset.splits)
        train_rows = np.arange(len(dataset.splits["train"]))
        selection: dict[str, Any] = {}
        if self.val_fraction and "val" in dataset.splits:
            log.info(
                "dataset.val_fraction=%s not used: %s has an official val split (%d images)",
                self.val_fraction,
                dataset.name,
                len(dataset.splits["val"]),
            )
        elif self.val_fraction:
            kept, held = stratified_split(
                dataset.splits["train"].labels, self.val_fraction, self.val_seed, what="validation holdout"
            )
            holdout = {"val_fraction": self.val_fraction, "val_seed": self.val_seed}
            self._subsets["val"] = SplitSubset("train", held, dict(holdout))
            train_rows, selection = kept, holdout
        if self.train_per_class is not None:
            # Drawn after the validation holdout, so val stays the same across shot counts.
            labels = dataset.splits["train"].labels[train_rows]
            chosen = per_class_subset(labels, self.train_per_class, self.few_shot_seed, classes=dataset.classes)
            train_rows = train_rows[chosen]
            selection = {**selection, "train_per_class": self.train_per_class, "few_shot_seed": self.few_shot_seed}
        if selection:
            self._subsets["train"] = SplitSubset("train", train_rows, selection)
        for split, subset in self._subsets.items():
            dataset.splits[split] = SubsetSamples(self._sources[subset.source], subset.rows)
        self._dataset = dataset

    @property
    def sources(self) -> dict[str, ImageSamples]:
        """The dataset's own splits, before any holdout or few-shot subset: what extraction reads."""
        self.setup()
        return self._sources

    @property
    def subsets(self) -> dict[str, SplitSubset]:
        """The splits that are rows of a source split (a validation holdout, a few-shot draw)."""
        self.setup()
        return self._subsets

    @property
    def source_names(self) -> list[str]:
        return [s for s in ("train", "val", "test") if s in self.sources]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def split_names(self) -> list[str]:
        return [s for s in ("train", "val", "test") if s in self.dataset.splits]

    def split_sizes(self) -> dict[str, int]:
        return {s: len(self.dataset.splits[s]) for s in self.split_names}

    def loader(
        self, split: str, training: bool = False, sampler: Sampler | None = None, source: bool = False
    ) -> DataLoader:
        """Deterministic, ordered batches with the eval transform; `training`: shuffled, augmented.
        `sampler` (tlbench.distributed.samplers, which deal the images to the ranks) replaces the order.
        `source`: the dataset's own split, whatever subset of it this run uses (extraction)."""
        transform = self.train_transform if training and self.train_transform is not None else self.transform
        samples = self.sources[split] if source else self.dataset.splits[split]
        dataset = TransformedSplit(samples, transform, self.input_size)
        workers = {
            "num_workers": self.num_workers,
            # workers live across the epochs of fine-tuning; an extraction loader is read once
            "persistent_workers": training and self.num_workers > 0,
            "prefetch_factor": PREFETCH_BATCHES if self.num_workers > 0 else None,
            "pin_memory": torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
        }
        if training:
            # Every training image once per epoch: no drop_last; a last batch of one image (BatchNorm
            # cannot train on it) borrows one from the batch before.
            order = sampler if sampler is not None else RandomSampler(dataset)
            return DataLoader(dataset, batch_sampler=TrainingBatches(order, self.batch_size), **workers)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, sampler=sampler, **workers)

    def evaluation_loader(self, split: str) -> DataLoader:
        """`split` in order, each rank its own unpadded share (every image evaluated exactly once)."""
        return self.loader(split, sampler=ShardSampler(len(self.dataset.splits[split])))

    def train_dataloader(self) -> DataLoader:
        if self.shuffle_seed is None:
            return self.loader("train", training=True)
        trainer = self.trainer
        order = EpochShuffleSampler(
            len(self.dataset.splits["train"]),
            self.shuffle_seed,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0,
        )
        return self.loader("train", training=True, sampler=order)

    def val_dataloader(self) -> DataLoader | list:
        # no val split: no validation loop (Lightning runs none over an empty list)
        return self.evaluation_loader("val") if "val" in self.dataset.splits else []

    def test_dataloader(self) -> DataLoader:
        return self.evaluation_loader("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return [self.loader(split, source=True) for split in self.source_names]
