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
from collections.abc import Callable, Iterator

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
    run the same number of steps), dealt round-robin; yields (index, augmentation seed) pairs."""

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
