"""The fine-tuning model from a backbone and the `strategy` group: new head, block groups, unfreezing
schedule, then the FineTuneModule with the optimizer and LR schedule the config targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from torch import nn

from tlbench.errors import ConfigError
from tlbench.finetune.groups import block_groups
from tlbench.finetune.module import FineTuneModule, build_head, replace_head
from tlbench.finetune.schedule import UnfreezeSchedule
from tlbench.models.backbones import Backbone


def build_finetune_module(backbone: Backbone, num_classes: int, strategy: Mapping[str, Any]) -> FineTuneModule:
    """`strategy`: the resolved `strategy` group as plain values (head, schedule, optimizer, lr_schedule,
    label_smoothing, lr_decay). Replaces the backbone's head in place; the module exposes `.groups`,
    `.schedule` and `.head_in_features` (the replaced head's input width)."""
    model = backbone.model
    old_head = model.get_submodule(backbone.head)
    if not isinstance(old_head, nn.Linear):
        raise ConfigError(f"fine-tuning needs a Linear classifier at {backbone.head}; set model.head=MODULE")
    replace_head(model, backbone.head, build_head(old_head.in_features, num_classes, **(strategy.get("head") or {})))
    groups = block_groups(model, backbone.head)
    schedule = UnfreezeSchedule(num_groups=len(groups), **(strategy.get("schedule") or {}))
    return FineTuneModule(
        model,
        head=backbone.head,
        groups=groups,
        schedule=schedule,
        num_classes=num_classes,
        optimizer=instantiate(strategy["optimizer"]),  # `_partial_`: the module passes its parameter groups
        lr_schedule=instantiate(strategy["lr_schedule"]),
        label_smoothing=float(strategy.get("label_smoothing", 0.0)),
        lr_decay=float(strategy.get("lr_decay", 0.5)),
        head_in_features=old_head.in_features,
    )
