"""FineTuneModule: a backbone with a new head, trained with discriminative learning rates.

Parameter groups: the head, then each block group from the top down; group i below the top gets
`lr * lr_decay**(i+1)` (ULMFiT's discriminative fine-tuning), `lr` being the optimizer's. Each group's
LR is the warm-up/decay schedule (tlbench/finetune/lr_schedules.py) times 0 or 1 from the unfreezing
schedule, computed from the epoch. Optimizer and LR schedule come built from the `strategy/optimizer`
and `strategy/lr_schedule` config groups (tlbench/finetune/assembly.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.aggregation import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from tlbench.errors import ConfigError
from tlbench.finetune.lr_schedules import LRMultiplier
from tlbench.finetune.schedule import UnfreezeSchedule


def build_head(in_features: int, num_classes: int, kind: str = "linear", hidden: int = 512, dropout: float = 0.0):
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
    raise ConfigError(f"strategy.head.kind must be linear or mlp, got {kind!r}")


def replace_head(model: nn.Module, head: str, new_head: nn.Module) -> None:
    parent_name, _, child = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new_head)


class FineTuneModule(pl.LightningModule):
    def __init__(
        self,
        backbone: nn.Module,
        head: str,
        groups: list[list[str]],
        schedule: UnfreezeSchedule,
        num_classes: int,
        optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
        lr_schedule: LRMultiplier,
        label_smoothing: float = 0.0,
        lr_decay: float = 0.5,
        head_in_features: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_name = head
        self.head_in_features = head_in_features  # the new head's input width: the feature dimension reported
        self.groups = groups
        self.schedule = schedule
        self.optimizer_factory = optimizer  # called with the parameter groups (a `_partial_` target)
        self.lr_schedule = lr_schedule
        self.lr_decay = lr_decay
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.trainable_groups = [False] * len(groups)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{kind}": MulticlassAccuracy(num_classes=num_classes, average=average)
                for stage in ("val", "test")
                for kind, average in (("top1", "micro"), ("mean_per_class", "macro"))
            }
        )
        # Images evaluated, summed over ranks: shows each sample counted exactly once under DDP.
        self.counts = nn.ModuleDict({stage: SumMetric() for stage in ("val", "test")})
        # Undecodable images met, per split, by dataset index; the pipeline tests the val and the test
        # split in turn and says which through test_split.
        self.unreadable: dict[str, set[int]] = {}
        self.test_split = "test"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        ok = self._readable(batch, "train")
        readable = int(ok.sum())
        # every image undecodable (the loss would be NaN), or one left where a training BatchNorm
        # cannot take a batch of one: a zero step that keeps every rank's graph alike under DDP
        if readable == 0 or (readable == 1 and self._batchnorm_training()):
            loss = sum((p * 0.0).sum() for p in self.parameters() if p.requires_grad)
        else:
            loss = self.loss(self(batch["image"][ok]), batch["label"][ok])
        self.log("train/loss", loss, prog_bar=True, sync_dist=True, batch_size=max(1, int(ok.sum())))
        return loss

    def _batchnorm_training(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in self.backbone.modules())

    def _readable(self, batch: dict, split: str) -> torch.Tensor:
        """The batch's mask of decoded images; the dataset indices of the others are noted per split."""
        ok = batch["ok"]
        if not bool(ok.all()):
            self.unreadable.setdefault(split, set()).update(int(i) for i in batch["index"][~ok].tolist())
        return ok

    def unreadable_on_all_ranks(self) -> dict[str, list[int]]:
        """Per split, the sorted dataset indices of undecodable images any rank met (every rank calls it)."""
        parts = [self.unreadable]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [{} for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(parts, self.unreadable)
        merged: dict[str, set[int]] = {}
        for part in parts:
            for split, indices in part.items():
                merged.setdefault(split, set()).update(indices)
        return {split: sorted(indices) for split, indices in merged.items()}

    def _evaluate(self, batch: dict, stage: str) -> None:
        ok = self._readable(batch, self.test_split if stage == "test" else stage)
        predictions = self(batch["image"][ok]).argmax(dim=1)
        for kind in ("top1", "mean_per_class"):
            metric = self.metrics[f"{stage}_{kind}"]
            metric.update(predictions, batch["label"][ok])
            self.log(f"{stage}/{kind}", metric, on_epoch=True, prog_bar=kind == "top1")
        self.counts[stage].update(torch.tensor(float(ok.sum())))
        self.log(f"{stage}/images", self.counts[stage], on_epoch=True)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # --- optimization ---
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Head first, then the block groups from the top down. No LR of their own: the optimizer gives
        them its `lr`, which configure_optimizers scales per group."""
        parameters = dict(self.backbone.named_parameters())
        head = [p for n, p in parameters.items() if n == self.head_name or n.startswith(self.head_name + ".")]
        param_groups = [{"params": head, "name": "head", "group": None}]
        for index in reversed(range(len(self.groups))):
            param_groups.append(
                {"params": [parameters[n] for n in self.groups[index]], "name": f"group{index}", "group": index}
            )
        return param_groups

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameter_groups())
        lr = float(optimizer.defaults["lr"])
        for group in optimizer.param_groups:  # geometrically smaller LRs from the top group down
            depth = None if group["group"] is None else len(self.groups) - 1 - group["group"]
            group["lr"] = lr if depth is None else lr * self.lr_decay ** (depth + 1)
        lambdas = [self._lr_lambda(g["group"]) for g in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def refresh_learning_rates(self) -> None:
        """Recompute every group's LR now: LambdaLR evaluates its lambdas after each step, so without
        this the first step of an epoch would still use the previous epoch's unfreezing state."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)

    def learning_rates(self) -> dict[str, float]:
        optimizer = self.optimizers()
        optimizer = getattr(optimizer, "optimizer", optimizer)
        return {g["name"]: float(g["lr"]) for g in optimizer.param_groups}

    def _lr_lambda(self, group: int | None):
        def factor(step: int) -> float:
            gate = 1.0 if group is None or self.schedule.is_trainable(group, self.current_epoch) else 0.0
            return gate * self._schedule_factor(step)

        return factor

    def _schedule_factor(self, step: int) -> float:
        # read from the trainer at every step (as the run's length is only known once it is attached)
        if self._trainer is None:
            total, steps_per_epoch = 1, 1
        else:
            total = max(1, self.trainer.estimated_stepping_batches)
            steps_per_epoch = max(1, total // max(1, self.trainer.max_epochs))
        return self.lr_schedule(step, total, steps_per_epoch)
