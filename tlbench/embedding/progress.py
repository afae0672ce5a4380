"""The extraction progress bar: Lightning's, with images per second (this rank's images times the
number of ranks) instead of batches per second."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class ExtractionProgressBar(TQDMProgressBar):
    def __init__(self, description: str = "Extracting") -> None:
        super().__init__()
        self.description = description
        self._started = 0.0
        self._images = 0

    @property
    def predict_description(self) -> str:
        return self.description

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self._started, self._images = time.perf_counter(), 0

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._images += len(batch["index"]) * trainer.world_size
        elapsed = time.perf_counter() - self._started
        if self.predict_progress_bar is not None and elapsed > 0 and self._should_update(batch_idx + 1, None):
            self.predict_progress_bar.set_postfix_str(f"{self._images / elapsed:.1f} img/s", refresh=False)
