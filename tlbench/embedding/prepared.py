"""The classifier's inputs: post-processing fitted on the train split and applied to every split.

The FNE's inputs are {-1, 0, 1} as int8, one byte per feature. With the cache on they are stored in
the FeatureStore too, under a key made of the raw features' keys (this split's and train's, whose
statistics standardize it) and the post-processing parameters. A rerun on the same features, e.g.
each point of a sweep over `classifier.C`, then loads a quarter of the bytes of the float32
features, memory-mapped, and skips the standardization.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.store import FeatureSet, FeatureStore, cache_key, row_chunks

log = logging.getLogger(__name__)


def prepared_key(raw_keys: dict[str, str], split: str, parameters: dict[str, Any]) -> str:
    return cache_key(kind="prepared", raw=raw_keys[split], train=raw_keys["train"], postprocess=parameters)


def prepare_inputs(
    post: FeaturePostprocess,
    parameters: dict[str, Any],
    features: dict[str, FeatureSet],
    raw_keys: dict[str, str],
    store: FeatureStore | None,
    reuse: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(inputs per split, the post-processing record for results.json). `store` None: no caching;
    only discretized (int8) inputs are cached, standardized float32 ones are as large as the raw.
    `reuse` False: compute and store them anew even if present."""
    cacheable = store is not None and post.discretize
    keys = {split: prepared_key(raw_keys, split, parameters) for split in features}
    if cacheable and reuse:
        assert store is not None
        stored = {split: store.load(key) for split, key in keys.items()}
        if all(entry is not None for entry in stored.values()):
            record = _stored_record(store, keys["train"])
            if record is not None:
                log.info("cache hit: int8 FNE inputs of %s", ", ".join(stored))
                return {split: entry.features for split, entry in stored.items()}, {**record, "cache": "hit"}
    post.fit(features["train"].features)
    inputs = {split: post.transform(fs.features) for split, fs in features.items()}
    record = post.describe(inputs["train"])
    if cacheable:
        assert store is not None
        for split, fs in features.items():
            writer = store.writer(keys[split], post.dtype)
            try:
                for part in row_chunks(len(fs.labels), fs.dim, 1):
                    writer.append(inputs[split][part], fs.labels[part], fs.indices[part])
                writer.mark_skipped(fs.skipped)
            except BaseException:
                writer.abort()
                raise
            meta = {"kind": "prepared", "split": split, "postprocess": record}
            store.commit(keys[split], writer, fs.layout, meta)
        record = {**record, "cache": "miss"}
    return inputs, record


def _stored_record(store: FeatureStore, key: str) -> dict[str, Any] | None:
    try:
        return json.loads((store.path(key) / "meta.json").read_text())["postprocess"]
    except (OSError, ValueError, KeyError):
        return None
