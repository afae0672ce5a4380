"""Extraction as a LightningModule driven by Trainer.predict (eval mode, inference mode)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from tlbench.embedding.hooks import TapRecorder
from tlbench.embedding.store import FeatureSet
from tlbench.models.taps import Tap


class FeatureExtractor(pl.LightningModule):
    """Runs the backbone; the tap hooks turn each batch into one (batch, dim) feature matrix."""

    def __init__(self, model: nn.Module, taps: Sequence[Tap]) -> None:
        super().__init__()
        self.model = model
        self.taps = list(taps)
        self.recorder: TapRecorder | None = None
        self.layout: list[tuple[str, int]] = []

    def on_predict_start(self) -> None:
        self.recorder = TapRecorder(self.model, self.taps)

    def on_predict_end(self) -> None:
        if self.recorder is not None:
            self.layout = list(self.recorder.layout or [])
            self.recorder.remove()
            self.recorder = None

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        assert self.recorder is not None
        self.model(batch["image"])
        return {
            "features": self.recorder.collect().cpu(),
            "label": batch["label"].cpu(),
            "index": batch["index"].cpu(),
            "ok": batch["ok"].cpu(),
        }


def assemble(outputs: Sequence[dict[str, torch.Tensor]], layout: list[tuple[str, int]]) -> FeatureSet:
    """Concatenate predict outputs into a FeatureSet ordered by dataset index; samples that failed
    to decode are dropped and listed, a sample seen twice (DistributedSampler padding) counts once."""
    features = torch.cat([o["features"] for o in outputs]).numpy()
    labels = torch.cat([o["label"] for o in outputs]).numpy().astype(np.int64)
    indices = torch.cat([o["index"] for o in outputs]).numpy().astype(np.int64)
    ok = torch.cat([o["ok"] for o in outputs]).numpy().astype(bool)
    skipped = sorted(set(indices[~ok].tolist()))
    indices, first = np.unique(indices, return_index=True)
    keep = ok[first]
    order = first[keep]
    return FeatureSet(
        features=np.ascontiguousarray(features[order], dtype=np.float32),
        labels=labels[order],
        indices=indices[keep],
        skipped=skipped,
        layout=layout,
    )
