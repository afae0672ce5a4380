"""Top-1 and mean per-class accuracy, computed with torchmetrics."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.classification import MulticlassAccuracy


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Top-1 accuracy and mean per-class accuracy (classes absent from `labels` are ignored)."""
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    preds = torch.as_tensor(np.asarray(predictions), dtype=torch.long)
    top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")(preds, target)
    present = torch.unique(target)
    per_class = MulticlassAccuracy(num_classes=num_classes, average="none")(preds, target)
    return {"top1": float(top1), "mean_per_class": float(per_class[present].mean())}
