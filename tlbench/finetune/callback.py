"""ProgressiveUnfreezing: applies the schedule at the start of every training epoch.

All groups sit in the optimizer from the start; a frozen group has learning rate 0 (the module's
LR lambdas read the same schedule), `requires_grad=False` (no gradient computed) and its BatchNorm
layers in eval mode (running statistics untouched). Everything derives from the epoch number, so
the schedule is identical on every DDP rank and a resumed run restores it exactly.
"""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from tlbench.finetune.schedule import UnfreezeSchedule


class ProgressiveUnfreezing(pl.Callback):
    def __init__(self, schedule: UnfreezeSchedule, groups: list[list[str]]) -> None:
        self.schedule = schedule
        self.groups = groups

    def apply(self, model: nn.Module, epoch: int) -> list[bool]:
        """Set requires_grad and BatchNorm modes for `epoch`; returns which groups train."""
        parameters = dict(model.named_parameters())
        trainable = [self.schedule.is_trainable(g, epoch) for g in range(len(self.groups))]
        for names, on in zip(self.groups, trainable):
            for name in names:
                parameters[name].requires_grad_(on)
        self._set_frozen_norms(model, trainable)
        return trainable

    def _set_frozen_norms(self, model: nn.Module, trainable: list[bool]) -> None:
        frozen_prefixes = tuple(
            name.rsplit(".", 1)[0] + "." for names, on in zip(self.groups, trainable) if not on for name in names
        )
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and (name + ".").startswith(frozen_prefixes):
                module.eval()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The backbone arrives in eval mode (extraction's default) and Lightning restores saved modes
        # rather than calling train(): put everything in train mode, then freeze what is frozen.
        pl_module.train()
        pl_module.trainable_groups = self.apply(pl_module.backbone, trainer.current_epoch)
        pl_module.refresh_learning_rates()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Re-applied every batch, whatever a validation run or user code did to module modes.
        self._set_frozen_norms(pl_module.backbone, pl_module.trainable_groups)
