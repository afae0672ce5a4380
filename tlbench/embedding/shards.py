"""Extraction over several ranks: each rank streams its share of a split into a shard, rank 0
merges them into one entry, counting every sample exactly once.

Trainer.predict under DDP gives each rank a part of the dataset (Lightning's unpadded sampler for
predict; a plain DistributedSampler would pad the last part with repeated samples). The samples
carry their dataset index, so the merge drops any repeat, checks that every index is present, and
orders the rows by index: the features, and the accuracy, are the same with 1, 2 or N ranks.
Shards go through the file system (FeatureStore entries in the run directory) rather than a
collective, so a 75,000 x 12,416 matrix never sits in GPU memory, a pickle or, since shards are
memory-mapped and copied in chunks, in rank 0's memory.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from tlbench.embedding.store import FeatureSet, FeatureStore, FeatureWriter, row_slices


def shard_name(rank: int, world: int) -> str:
    """Named by world size, so shards a killed run of another size left behind are never merged."""
    return f"rank{rank}-of-{world}"


def check_coverage(indices: np.ndarray, skipped: list[int], size: int, what: str = "split") -> None:
    """Every dataset index 0..size-1 is either a row or skipped, and nothing else is there (numpy
    masks, not Python sets: a few bytes per image)."""
    present = np.unique(np.asarray(indices, np.int64))
    extra = present[(present < 0) | (present >= size)]
    covered = np.zeros(size, bool)
    covered[present[(present >= 0) & (present < size)]] = True
    gone = np.asarray(skipped, np.int64)
    covered[gone[(gone >= 0) & (gone < size)]] = True
    missing = np.flatnonzero(~covered)
    if len(missing) or len(extra):
        raise RuntimeError(
            f"gathered features of {what} do not cover the dataset once: {len(missing)} of {size} indices "
            f"missing (e.g. {missing[:5].tolist()}), {len(extra)} out of range (e.g. {extra[:5].tolist()})"
        )


def merge_shards(parts: list[FeatureSet], size: int, writer: FeatureWriter, what: str = "split") -> None:
    """Append the rows of all parts to `writer` in dataset-index order, each index once (the first
    occurrence), in chunks; skipped indices are passed on. Coverage is checked before any write."""
    indices = np.concatenate([p.indices for p in parts]).astype(np.int64)
    skipped = sorted({int(i) for p in parts for i in p.skipped})
    check_coverage(indices, skipped, size, what)
    _, first = np.unique(indices, return_index=True)  # positions in the concatenation, by index
    owner = np.repeat(np.arange(len(parts)), [len(p.indices) for p in parts])
    local = np.concatenate([np.arange(len(p.indices)) for p in parts]) if parts else np.zeros(0, np.int64)
    labels = np.concatenate([p.labels for p in parts])
    dim = parts[0].dim
    for part in row_slices(len(first), dim, parts[0].features.dtype.itemsize):
        positions = first[part]
        rows = np.empty((len(positions), dim), dtype=parts[0].features.dtype)
        for k, shard in enumerate(parts):
            mine = owner[positions] == k
            if mine.any():
                rows[mine] = shard.features[local[positions[mine]]]
        writer.append(rows, labels[positions], indices[positions])
    writer.mark_skipped(skipped)


def gather_features(
    shards: FeatureStore,
    size: int,
    strategy: Any,
    what: str,
    target: FeatureStore,
    key: str,
    meta: dict[str, Any],
) -> FeatureSet | None:
    """After every rank committed its shard to `shards`: rank 0 merges them into `target[key]` and
    gets the FeatureSet, the others None. `strategy` is the Trainer's (world size, rank, barrier)."""
    world, rank = strategy.world_size, strategy.global_rank
    strategy.barrier("tlbench_extraction_shards")
    if rank != 0:
        return None
    parts = []
    for r in range(world):
        shard = shards.load(shard_name(r, world))
        if shard is None:
            raise RuntimeError(f"rank {r}'s features of {what} are missing from {shards.root}")
        parts.append(shard)
    writer = target.writer(key, parts[0].features.dtype)
    try:
        merge_shards(parts, size, writer, what)
    except BaseException:
        writer.abort()
        raise
    merged = target.commit(key, writer, parts[0].layout, meta)
    del parts  # the memory maps, before their files go
    shutil.rmtree(shards.root, ignore_errors=True)
    return merged
