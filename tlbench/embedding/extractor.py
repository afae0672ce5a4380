"""Extraction as a LightningModule driven by Trainer.predict (eval mode, inference mode).

Each batch's features go straight to a FeatureWriter on disk, so memory holds one batch whatever
the size of the dataset (Trainer.predict runs with return_predictions=False). The writing stays here
rather than in a BasePredictionWriter callback: the writer is opened per rank when predict starts,
aborted by the pipeline on failure and committed with the layout the hooks found, all of which this
module holds; a callback would need each of them handed over, for no gain."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn

from tlbench.embedding.hooks import TapRecorder
from tlbench.embedding.store import FeatureWriter
from tlbench.models.taps import Tap

WriterFactory = Callable[[int, int], FeatureWriter]  # (global rank, world size) -> writer


class FeatureExtractor(pl.LightningModule):
    """Runs the backbone; the tap hooks turn each batch into one (batch, dim) feature matrix, which
    is appended to the writer that `open_writer(rank, world_size)` gives at the start of predict."""

    def __init__(
        self, model: nn.Module, taps: Sequence[Tap], open_writer: WriterFactory, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.taps = list(taps)
        self.open_writer = open_writer
        self.channels_last = channels_last
        self.recorder: TapRecorder | None = None
        self.writer: FeatureWriter | None = None
        self.layout: list[tuple[str, int]] = []
        self.images = 0  # this rank's images, for the images/s figures

    def on_predict_start(self) -> None:
        if self.channels_last:  # NHWC convolutions: faster with cuDNN under autocast, and on recent CPUs
            self.model.to(memory_format=torch.channels_last)
        self.recorder = TapRecorder(self.model, self.taps)
        self.writer = self.open_writer(self.global_rank, self.trainer.world_size)

    def on_predict_end(self) -> None:
        if self.recorder is not None:
            self.layout = list(self.recorder.layout or [])
            self.recorder.remove()
            self.recorder = None
        if self.channels_last:
            self.model.to(memory_format=torch.contiguous_format)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> int:
        assert self.recorder is not None and self.writer is not None
        images = batch["image"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.model(images)
        features = self.recorder.collect().float().cpu().numpy()
        self.writer.append(
            features, batch["label"].cpu().numpy(), batch["index"].cpu().numpy(), batch["ok"].cpu().numpy()
        )
        self.images += len(features)
        return len(features)  # the rows are on disk; Lightning keeps no predictions
