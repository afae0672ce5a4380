"""Rows and columns of stored features, selected without another forward pass: a few-shot draw or a
validation holdout is rows of its source split (data/subsets.py SplitSubset), one layer of the FNE is
the columns its tap owns (the layout)."""

from __future__ import annotations

import hashlib

import numpy as np

from tlbench.embedding.store import FeatureSet


def row_view(source: FeatureSet, rows: np.ndarray) -> FeatureSet:
    """The features of the subset whose images are `rows` (sorted indices into the source split),
    indexed as the subset is: its image i is source image rows[i]. Images of the subset that were
    skipped in the source (undecodable) stay skipped. The selected rows are copied; the subset's
    entry id names the source version and the rows, so post-processed inputs cached for one draw are
    never taken for another's."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == len(source.labels) + len(source.skipped) and np.array_equal(rows, np.arange(len(rows))):
        return source  # every image: the source itself (possibly memory-mapped, nothing copied)
    position = np.searchsorted(rows, source.indices)
    inside = position < len(rows)
    inside[inside] = rows[position[inside]] == source.indices[inside]
    skipped_rows = np.asarray(source.skipped, dtype=np.int64)
    skipped_position = np.searchsorted(rows, skipped_rows)
    kept = skipped_position < len(rows)
    kept[kept] = rows[skipped_position[kept]] == skipped_rows[kept]
    entry = None
    if source.entry_id is not None:
        entry = f"{source.entry_id}+rows:{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}"
    selected = np.flatnonzero(inside)
    return FeatureSet(
        features=np.asarray(source.features[selected]),
        labels=np.asarray(source.labels[selected]),
        indices=position[selected],
        skipped=[int(i) for i in skipped_position[kept]],
        layout=list(source.layout),
        nonfinite_columns=0 if source.nonfinite_columns == 0 else None,
        entry_id=entry,
    )


def tap_columns(layout: list[tuple[str, int]]) -> list[tuple[str, slice]]:
    """Each tap's columns in the embedding, in network order."""
    columns, start = [], 0
    for tap, width in layout:
        columns.append((tap, slice(start, start + width)))
        start += width
    return columns
