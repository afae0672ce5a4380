"""The classifier's inputs: post-processing fitted on the train split and applied to every split.

The FNE's inputs are {-1, 0, 1} as int8, one byte per feature. With the cache on they are stored in
the FeatureStore too, under a key made of the stored versions of the raw features they come from
(this split's and train's, whose statistics standardize it; a version is never changed, a split
extracted again is a new version) and the post-processing parameters. A rerun on the same features, e.g.
each point of a sweep over `classifier.C`, then loads a quarter of the bytes of the float32
features, memory-mapped, and skips the standardization.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.store import FeatureSet, FeatureStore, cache_key

log = logging.getLogger(__name__)


def prepared_key(features: dict[str, FeatureSet], split: str, parameters: dict[str, Any]) -> str | None:
    """None when a raw split has no stored version (extracted without the cache)."""
    raw, train = features[split].entry_id, features["train"].entry_id
    if raw is None or train is None:
        return None
    return cache_key(kind="prepared", raw=raw, train=train, postprocess=parameters)


def prepare_inputs(
    post: FeaturePostprocess,
    parameters: dict[str, Any],
    features: dict[str, FeatureSet],
    store: FeatureStore | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(inputs per split, the post-processing record for results.json). `store` None: no caching;
    only discretized (int8) inputs are cached, standardized float32 ones are as large as the raw."""
    keys = {split: prepared_key(features, split, parameters) for split in features}
    cacheable = store is not None and post.discretize and None not in keys.values()
    if cacheable:
        assert store is not None
        stored = {split: store.load(key) for split, key in keys.items()}  # type: ignore[arg-type]
        if all(_matches(stored[split], fs) for split, fs in features.items()):
            record = _stored_record(store, stored["train"])  # type: ignore[arg-type]
            if record is not None:
                log.info("cache hit: int8 FNE inputs of %s", ", ".join(stored))
                inputs = {split: entry.features for split, entry in stored.items()}  # type: ignore[union-attr]
                return inputs, {**record, "cache": "hit"}
    post.fit(features["train"].features, features["train"].layout)
    inputs = {split: post.transform(fs.features) for split, fs in features.items()}
    record = post.describe(inputs["train"])
    if not cacheable:
        return inputs, record
    assert store is not None
    for split, fs in features.items():
        key = keys[split]
        assert key is not None
        meta = {"kind": "prepared", "split": split, "from": fs.entry_id, "postprocess": record}
        store.save(key, FeatureSet(inputs[split], fs.labels, fs.indices, fs.skipped, fs.layout), meta)
    return inputs, {**record, "cache": "miss"}


def _matches(entry: FeatureSet | None, raw: FeatureSet) -> bool:
    """The stored inputs have the raw split's rows, in its order (a cheap guard on top of the key)."""
    return entry is not None and np.array_equal(entry.indices, raw.indices) and entry.skipped == raw.skipped


def _stored_record(store: FeatureStore, entry: FeatureSet) -> dict[str, Any] | None:
    try:
        return json.loads((store.root / str(entry.entry_id) / "meta.json").read_text())["postprocess"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
