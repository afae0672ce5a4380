"""EpochCurve: one row per epoch (accuracy, which groups trained, learning rates), kept in the
checkpoint so that a resumed run reports the whole curve."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


class EpochCurve(pl.Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch,
            "trainable_groups": [i for i, on in enumerate(pl_module.trainable_groups) if on],
            "learning_rates": pl_module.learning_rates(),
        }
        for key in ("train/loss", "val/top1", "val/mean_per_class"):
            if key in metrics:
                row[key] = float(metrics[key])
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
