"""Samplers that split a dataset over the ranks themselves (the Trainer runs with
use_distributed_sampler=False), so that

- evaluation counts every sample exactly once: rank r takes r, r+W, r+2W, ... with no padding
  (DistributedSampler pads with duplicates, and synced metrics would count them);
- the training order and each sample's augmentation depend only on (seed, epoch, index): a run
  resumed at an epoch boundary after a requeue sees the same batches as an uninterrupted one.

The rank and world size are read when iterating, after Lightning has set up the process group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Negative "indices" name the other seeded streams, so none shares a seed with an image.
PERMUTATION_STREAM = -1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample augmentation seed (63 bits): independent of ranks, workers and history.
    Negative indices are for other streams (the permutation, the per-rank global reseed)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    return mixed >> 1


class ShardSampler(Sampler[int]):
    """In-order indices of this rank's share, unpadded (ranks may differ by one sample)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_and_world()
        return iter(range(rank, self.size, world))

    def __len__(self) -> int:
        rank, world = rank_and_world()
        return len(range(rank, self.size, world))


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """A permutation seeded by (seed, epoch), padded to a multiple of the world size (DDP ranks must
    run the same number of steps), dealt round-robin; yields (index, augmentation seed) pairs.

    Every index comes once per epoch; the padding repeats the first `ceil(size / W) * W - size`
    (at most W - 1) indices of the permutation, so on W ranks up to W - 1 images are seen twice.
    Batched by TrainingBatches, nothing is dropped."""

    def __init__(self, size: int, seed: int, epoch: Callable[[], int]) -> None:
        self.size = size
        self.seed = seed
        self.epoch = epoch  # read at each iteration: the trainer's current epoch, restored on resume

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = rank_and_world()
        epoch = int(self.epoch())
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, PERMUTATION_STREAM))
        order = torch.randperm(self.size, generator=generator).tolist()
        total = math.ceil(self.size / world) * world
        order = (order * math.ceil(total / max(self.size, 1)))[:total]
        return iter([(index, sample_seed(self.seed, epoch, index)) for index in order[rank:total:world]])

    def __len__(self) -> int:
        _, world = rank_and_world()
        return math.ceil(self.size / world)


class TrainingBatches(Sampler[list]):
    """Batches of `batch_size` over `sampler` that keep every sample: the last batch is smaller
    (no drop_last), except that a last batch of a single sample, which BatchNorm cannot train on
    ("Expected more than 1 value per channel when training"), takes one sample from the batch before
    it (batch_size - 1 and 2; with batch_size 2, one batch of 3). Every rank gets the same number of
    samples from EpochShuffleSampler, hence the same batches and the same number of steps."""

    def __init__(self, sampler: Sampler | Iterable, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list]:
        previous: list | None = None
        batch: list = []
        for item in self.sampler:
            batch.append(item)
            if len(batch) == self.batch_size:
                if previous is not None:
                    yield previous
                previous, batch = batch, []
        if len(batch) == 1 and previous is not None and self.batch_size > 1:
            if len(previous) > 2:
                previous, batch = previous[:-1], [previous[-1], *batch]
            else:
                previous, batch = previous + batch, []
        if previous is not None:
            yield previous
        if batch:
            yield batch

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)  # type: ignore[arg-type]
        if rest == 1 and full and self.batch_size == 2:
            return full  # the single sample joins the last pair
        return full + (1 if rest else 0)
