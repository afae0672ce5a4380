"""Extraction over several ranks: each rank writes its share of a split as a shard, rank 0 merges
them into one FeatureSet, counting every sample exactly once.

Trainer.predict under DDP gives each rank a part of the dataset (Lightning's unpadded sampler for
predict; a plain DistributedSampler would pad the last part with repeated samples). The samples
carry their dataset index, so the merge drops any repeat, checks that every index is present, and
orders the rows by index: the features, and the accuracy, are the same with 1, 2 or N ranks.
Shards go through the file system (the FeatureStore's atomic writes, in the run directory) rather
than a collective, so a 75,000 x 12,416 matrix never sits in GPU memory or a pickle.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.embedding.store import FeatureSet, FeatureStore


def merge_shards(parts: list[FeatureSet], size: int, what: str = "split") -> FeatureSet:
    """One FeatureSet from per-rank parts: duplicates dropped, coverage checked, rows by index."""
    indices = np.concatenate([p.indices for p in parts]).astype(np.int64)
    features = np.concatenate([p.features for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    skipped = sorted({int(i) for p in parts for i in p.skipped})
    unique, first = np.unique(indices, return_index=True)
    missing = sorted(set(range(size)) - set(unique.tolist()) - set(skipped))
    extra = sorted(set(unique.tolist()) - set(range(size)))
    if missing or extra:
        raise RuntimeError(
            f"gathered features of {what} do not cover the dataset once: {len(missing)} of {size} indices "
            f"missing (e.g. {missing[:5]}), {len(extra)} out of range (e.g. {extra[:5]})"
        )
    return FeatureSet(
        features=np.ascontiguousarray(features[first]),
        labels=labels[first],
        indices=unique,
        skipped=skipped,
        layout=parts[0].layout,
    )


def gather_features(part: FeatureSet, size: int, shard_dir: Path, strategy: Any, what: str) -> FeatureSet | None:
    """Called on every rank with its part; rank 0 gets the merged FeatureSet, the others None.
    `strategy` is the Trainer's (for world size, rank and barrier)."""
    world, rank = strategy.world_size, strategy.global_rank
    if world == 1:
        return merge_shards([part], size, what)
    shards = FeatureStore(shard_dir)
    # Named by world size, so shards a killed run left behind are overwritten, never merged.
    shards.save(f"rank{rank}-of-{world}", part, {"rank": rank, "world_size": world, "split": what})
    strategy.barrier("tlbench_extraction_shards")
    if rank != 0:
        return None
    parts = []
    for r in range(world):
        shard = shards.load(f"rank{r}-of-{world}")
        if shard is None:
            raise RuntimeError(f"rank {r}'s features of {what} are missing from {shard_dir}")
        parts.append(shard)
    merged = merge_shards(parts, size, what)
    shutil.rmtree(shard_dir, ignore_errors=True)
    return merged
