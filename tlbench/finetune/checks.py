"""Fine-tuning settings that cannot train (errors) or leave part of the plan unused (warnings),
found before training starts."""

from __future__ import annotations

import importlib
import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

from torch import nn

from tlbench.data.datamodule import TransferDataModule, check_whole
from tlbench.distributed.samplers import TrainingBatches
from tlbench.errors import ConfigError
from tlbench.finetune.schedule import UnfreezeSchedule

log = logging.getLogger(__name__)

HEADS = ("linear", "mlp")


def check_finetune_config(strategy: Mapping[str, Any]) -> None:
    """strategy.* values (the `strategy` config group) that cannot train, refused with a ConfigError
    naming the key. Cheap and model-free: run.py runs it before building the backbone and the data."""
    epochs = strategy.get("epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ConfigError(
            f"strategy.epochs must be >= 1, a whole number; got {epochs!r}. Fine-tuning without an epoch would "
            "report the accuracy of an untrained new head. To evaluate a pretrained model without fine-tuning, "
            "use strategy=last_layer (a linear classifier on its frozen features)"
        )
    head = strategy.get("head") or {}
    _choice("strategy.head.kind", head.get("kind", "linear"), HEADS)
    _number("strategy.head.dropout", head.get("dropout", 0.0), low=0.0, high=1.0, high_open=True)
    if head.get("kind") == "mlp":
        check_whole("strategy.head.hidden", head.get("hidden", 512), 1)
    schedule = strategy.get("schedule") or {}
    check_whole("strategy.schedule.every", schedule.get("every", 1), 1)
    check_whole("strategy.schedule.frozen_forever", schedule.get("frozen_forever", 0), 0)
    check_whole("strategy.schedule.lp_epochs", schedule.get("lp_epochs", 0), 0)
    for milestone in schedule.get("milestones") or []:
        check_whole("strategy.schedule.milestones", milestone, 1)
    # optimizer and LR schedule: targets of the strategy/optimizer and strategy/lr_schedule groups; an
    # unknown group option is Hydra's error (naming the options), a bad _target_ is refused here
    optimizer = strategy.get("optimizer") or {}
    _target("strategy.optimizer", optimizer)
    if optimizer.get("_partial_") is not True:
        raise ConfigError(
            f"strategy.optimizer._partial_ must be true (the module calls the optimizer with its parameter "
            f"groups), got {optimizer.get('_partial_')!r}"
        )
    _number("strategy.optimizer.lr", optimizer.get("lr"), low=0.0)
    if "momentum" in optimizer:  # sgd's; adamw has none
        _number("strategy.optimizer.momentum", optimizer["momentum"], low=0.0, high=1.0, high_open=True)
    _number("strategy.optimizer.weight_decay", optimizer.get("weight_decay", 0.0), low=0.0)
    lr_schedule = strategy.get("lr_schedule") or {}
    _target("strategy.lr_schedule", lr_schedule)
    check_whole("strategy.lr_schedule.warmup_steps", lr_schedule.get("warmup_steps", 0), 0)
    if "gamma" in lr_schedule:  # step's
        _number("strategy.lr_schedule.gamma", lr_schedule["gamma"], low=0.0, low_open=True)
    if "step_epochs" in lr_schedule:
        check_whole("strategy.lr_schedule.step_epochs", lr_schedule["step_epochs"], 1)
    _number("strategy.lr_decay", strategy.get("lr_decay", 0.5), low=0.0)
    _number("strategy.label_smoothing", strategy.get("label_smoothing", 0.0), low=0.0, high=1.0, high_open=True)


def warn_about_schedule(schedule: UnfreezeSchedule, epochs: int) -> None:
    """Settings that are valid but leave part of the plan unused within strategy.epochs."""
    if schedule.preset != "head_only" and schedule.unfreezable and schedule.trainable_groups(epochs - 1) == 0:
        log.warning(
            "no block group of the backbone unfreezes within strategy.epochs=%d (schedule %s, lp_epochs=%d): "
            "only the head trains",
            epochs,
            schedule.preset,
            schedule.lp_epochs,
        )
    late = [m for m in schedule.milestones if schedule.lp_epochs + m >= epochs]
    if schedule.preset == "progressive" and late:
        log.warning(
            "strategy.schedule.milestones %s come at or after the last epoch (strategy.epochs=%d, lp_epochs=%d): "
            "those groups never train",
            late,
            epochs,
            schedule.lp_epochs,
        )


def warn_about_warmup(warmup: int, datamodule: TransferDataModule, world: int, epochs: int) -> None:
    per_rank = math.ceil(len(datamodule.dataset.splits["train"]) / max(world, 1))
    total = epochs * len(TrainingBatches(range(per_rank), datamodule.batch_size))
    if warmup >= total:
        log.warning(
            "strategy.lr_schedule.warmup_steps=%d is at least the whole training (%d steps: %d epochs of %d "
            "images per rank in batches of %d): the learning rate never reaches its peak nor decays",
            warmup,
            total,
            epochs,
            per_rank,
            datamodule.batch_size,
        )


def check_batchnorm_batches(
    model: nn.Module,
    groups: list[list[str]],
    schedule: UnfreezeSchedule,
    epochs: int,
    datamodule: TransferDataModule,
    world: int,
) -> None:
    """A BatchNorm layer that trains needs batches of two images or more. The training loader avoids
    a last batch of one (TrainingBatches), but not dataset.batch_size=1 nor one image per rank."""
    per_rank = math.ceil(len(datamodule.dataset.splits["train"]) / max(world, 1))
    trained = schedule.trainable_groups(epochs - 1)  # groups only unfreeze over time: the most at the end
    if not trained or (datamodule.batch_size > 1 and per_rank > 1):
        return
    names = {n for group in groups[len(groups) - trained :] for n in group}
    norms = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and any(f"{name}.{p}" in names for p, _ in module.named_parameters(recurse=False))
    ]
    if norms:
        raise ConfigError(
            f"BatchNorm layers that train ({norms[0]}, {len(norms)} in all) cannot train on batches of one "
            f"image: dataset.batch_size={datamodule.batch_size}, {per_rank} training image(s) per rank on "
            f"{world} rank(s). Use dataset.batch_size >= 2 and at least two training images per rank, or keep "
            "those groups frozen (strategy.schedule.frozen_forever, strategy.schedule.preset=head_only)"
        )


def _number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = (
            ("(" if low_open else "[") + f"{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}" + (")" if high_open or high is None else "]")
        )
        raise ConfigError(f"{key} must be a number in {bounds}, got {value!r}")


def _target(key: str, node: Mapping[str, Any]) -> None:
    """node's `_target_` names something importable: a typo fails here, before any model is built."""
    target = node.get("_target_")
    if not (isinstance(target, str) and _importable(target)):
        raise ConfigError(
            f"{key}._target_ must name an importable class or function, got {target!r}; "
            f"or choose an option of the config group: {key.replace('.', '/')}=NAME"
        )


def _importable(path: str) -> bool:
    """`a.b.C` resolves as Hydra resolves a _target_ (the longest importable module, then attributes);
    Hydra's own get_object would also log the failure."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False
        return True
    return False


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(options)}, got {value!r}")
