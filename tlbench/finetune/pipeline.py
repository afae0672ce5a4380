"""The fine-tuning run: new head, block groups, schedule, Trainer.fit then Trainer.test."""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from torch import nn
from torch.utils.data import DataLoader

from tlbench.data.datamodule import TransferDataModule, check_whole
from tlbench.distributed.samplers import EpochShuffleSampler, ShardSampler, TrainingBatches
from tlbench.errors import ConfigError, WeightsError
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.curve import EpochCurve
from tlbench.finetune.epoch_seed import EpochSeed
from tlbench.finetune.groups import block_groups
from tlbench.finetune.module import FineTuneModule, build_head, replace_head
from tlbench.finetune.resume import TrainingRecord, check_settings, find_resume
from tlbench.finetune.schedule import UnfreezeSchedule
from tlbench.models.backbones import Backbone
from tlbench.provenance import provenance
from tlbench.results import Result, write_results
from tlbench.tracking.loggers import build_logger, log_result
from tlbench.trainer import build_trainer, several_processes, trainer_settings

log = logging.getLogger(__name__)


def run_finetune(
    cfg: DictConfig, run_dir: Path, backbone: Backbone, datamodule: TransferDataModule, started: float
) -> Result | None:
    """The Result on rank 0 (which alone writes it); None on the other ranks."""
    check_finetune_config(cfg)
    strategy = cfg.strategy
    epochs = int(strategy.epochs)
    model = backbone.model
    old_head = model.get_submodule(backbone.head)
    if not isinstance(old_head, nn.Linear):
        raise ConfigError(f"fine-tuning needs a Linear classifier at {backbone.head}; set model.head=MODULE")
    num_classes = len(datamodule.classes)
    head_cfg = OmegaConf.to_container(strategy.head, resolve=True)
    replace_head(model, backbone.head, build_head(old_head.in_features, num_classes, **head_cfg))  # type: ignore[arg-type]
    groups = block_groups(model, backbone.head)
    schedule = UnfreezeSchedule(num_groups=len(groups), **OmegaConf.to_container(strategy.schedule, resolve=True))
    module = FineTuneModule(
        model,
        head=backbone.head,
        groups=groups,
        schedule=schedule,
        num_classes=num_classes,
        optimizer=OmegaConf.to_container(strategy.optimizer, resolve=True),  # type: ignore[arg-type]
        lr_schedule=OmegaConf.to_container(strategy.lr_schedule, resolve=True),  # type: ignore[arg-type]
        label_smoothing=float(strategy.label_smoothing),
        lr_decay=float(strategy.lr_decay),
    )
    warn_about_schedule(schedule, epochs)
    has_val = "val" in datamodule.split_names
    settings = trainer_settings(cfg)
    if several_processes(settings) and settings.get("strategy", "auto") == "auto":
        # Frozen groups have requires_grad=False, so DDP must expect parameters without gradients.
        settings["strategy"] = "ddp_find_unused_parameters_true"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="epoch{epoch}",
        auto_insert_metric_name=False,
        monitor="val/top1" if has_val else None,
        mode="max",
    )
    # A separate, unmonitored checkpoint written every epoch: with a monitor, Lightning rewrites
    # last.ckpt only when the monitored value improves, and a resume must start from the last epoch.
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    curve = EpochCurve()
    record = TrainingRecord()  # the training settings, attempt and time, in every checkpoint
    logger = build_logger(cfg)  # Lightning logs the per-epoch curves (train loss, val accuracy)
    settings.update(
        max_epochs=epochs,
        enable_checkpointing=True,
        logger=logger or False,
        num_sanity_val_steps=0,
        # tlbench's samplers split the data over the ranks: evaluation without padded duplicates,
        # training order and augmentation fixed by (seed, epoch) so a resumed run equals a straight one.
        use_distributed_sampler=False,
    )
    callbacks = [ProgressiveUnfreezing(schedule, groups), EpochSeed(int(cfg.seed)), checkpoint, last, curve, record]
    trainer = build_trainer(cfg, settings, callbacks=callbacks)
    log.info("fine-tuning %s: %d block groups, schedule %s", backbone.name, len(groups), schedule)

    world = trainer.world_size
    record.settings = training_settings(cfg, backbone, datamodule, world, settings)
    check_batchnorm_batches(model, groups, schedule, epochs, datamodule, world)
    warn_about_warmup(strategy, datamodule, world, epochs)
    # Last of the checks: with overwrite=true this removes the run directory's earlier state.
    resume = find_resume(cfg.trainer.get("ckpt_path"), run_dir, overwrite=bool(cfg.get("overwrite", False)))
    ckpt_path = resume.path if resume else None
    if resume:
        check_checkpoint(module, resume.path, record.settings, own=resume.own, epochs=epochs)

    def loader(split: str, training: bool = False) -> DataLoader:
        size = len(datamodule.dataset.splits[split])
        if training:
            sampler = EpochShuffleSampler(size, int(cfg.seed), epoch=lambda: trainer.current_epoch)
        else:
            sampler = ShardSampler(size)
        return datamodule.loader(split, training=training, sampler=sampler)

    t0 = time.perf_counter()
    trainer.fit(
        module,
        train_dataloaders=loader("train", training=True),
        val_dataloaders=loader("val") if has_val else None,
        ckpt_path=ckpt_path,
    )
    fit_s = time.perf_counter() - t0
    # testing from the best checkpoint restores the curve (and the record) as they were then
    rows = list(curve.rows)
    earlier_s, attempts = record.earlier_seconds, record.earlier_attempts + 1
    t0 = time.perf_counter()
    # The best checkpoint on val; without val, the final weights (recorded as such).
    tested = "best" if has_val and checkpoint.best_model_path else "last"
    metrics, evaluated = {}, {}
    for split in [s for s in ("val", "test") if s in datamodule.split_names]:
        module.test_split = split
        out = trainer.test(module, dataloaders=loader(split), ckpt_path=tested if tested == "best" else None)
        metrics[split] = {k: float(out[0][f"test/{k}"]) for k in ("top1", "mean_per_class")}
        evaluated[split] = int(out[0]["test/images"])
    test_s = time.perf_counter() - t0
    skipped = {
        split: [datamodule.dataset.splits[split].describe(i) for i in indices]
        for split, indices in module.unreadable_on_all_ranks().items()
    }
    for split, files in skipped.items():
        log.warning("%d unreadable images skipped in %s: %s", len(files), split, ", ".join(files[:5]))

    result = Result(
        dataset=datamodule.dataset.name,
        model=backbone.name,
        strategy="finetune",
        headline_metric=datamodule.dataset.metric,
        metrics=metrics,
        feature_dim=old_head.in_features,
        split_sizes=datamodule.split_sizes(),
        num_classes=num_classes,
        timings={
            # training of the evaluated weights over every attempt (resumed ones included), then this one's
            "fit": round(earlier_s + fit_s, 3),
            "fit_this_attempt": round(fit_s, 3),
            "evaluate": round(test_s, 3),
            "total": round(time.perf_counter() - started, 3),  # this attempt
        },
        cache={},
        skipped_files=skipped,
        seed=int(cfg.seed),
        backbone=backbone.describe(),
        taps=[],
        postprocess={},
        classifier={
            "type": "finetune",
            "head": head_cfg,
            "optimizer": OmegaConf.to_container(strategy.optimizer, resolve=True),
            "lr_schedule": OmegaConf.to_container(strategy.lr_schedule, resolve=True),
            "schedule": OmegaConf.to_container(strategy.schedule, resolve=True),
            "groups": len(groups),
            "epochs": epochs,
            "evaluated_checkpoint": tested if tested == "best" else "last epoch (no validation split to select on)",
            "checkpoint_dir": str(run_dir / "checkpoints"),
            "resumed_from": ckpt_path,
            "training_attempts": attempts,  # this one and the earlier ones its checkpoint continues
            "evaluated_images": evaluated,  # summed over ranks: each image once
        },
        config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
        provenance=provenance(),
        run_dir=str(run_dir),
        curve=rows,
        world_size=world,
    )
    if not trainer.is_global_zero:  # one writer under DDP
        return None
    write_results(result, run_dir)
    if isinstance(logger, WandbLogger):  # final values and tables; CSV already has every epoch and the test
        log_result(logger, result, config_logged=True)
    return result


def check_checkpoint(
    module: FineTuneModule,
    ckpt_path: str,
    settings: dict[str, Any] | None = None,
    own: bool = False,
    epochs: int | None = None,
) -> None:
    """Refuse, before training, a checkpoint of another model or head (Lightning would fail later
    with a long size-mismatch trace), and, given this run's training `settings`, one trained with
    other settings (see resume.check_settings; `own`: the run directory's own last.ckpt)."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise WeightsError(f"trainer.ckpt_path={path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", {})
    own_state = module.state_dict()
    missing = sorted(set(own_state) - set(state))
    unexpected = sorted(set(state) - set(own_state))
    shapes = [k for k in own_state if k in state and state[k].shape != own_state[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"checkpoint {path} is not of this model/head: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), shape mismatches {shapes[:3]}"
        )
    if settings is not None:
        check_settings(str(path), checkpoint, settings, own=own, epochs=epochs if epochs is not None else 1)


# Trainer arguments that change what is trained (the others: logging, progress bars, devices as such).
TRAINING_TRAINER_KEYS = (
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "limit_train_batches",
    "max_steps",
    "deterministic",
)
# Dataset keys that do not change the training data: where the files are, how they are read.
NOT_TRAINING_DATASET_KEYS = ("root", "num_workers")


def training_settings(
    cfg: DictConfig, backbone: Backbone, datamodule: TransferDataModule, world_size: int, trainer: dict[str, Any]
) -> dict[str, Any]:
    """Everything that changes what a fine-tuning run trains, recorded in its checkpoints and compared
    on resume: the strategy (epochs, head, schedule, optimizer, LR schedule, augmentation, ...), the
    seed (data order, augmentation, dropout), the model and its weights, the training data (dataset
    parameters, few-shot and validation subsets, batch size, the training labels) and the Trainer
    settings that change the optimization, with the world size (each rank takes its own batches: the
    effective batch and the order per rank follow it). Not compared: where the data lies
    (dataset.root, which may be staged anew for each job), workers, loggers, progress bars."""
    strategy: dict[str, Any] = OmegaConf.to_container(cfg.strategy, resolve=True)  # type: ignore[assignment]
    strategy.pop("taps", None)
    dataset: dict[str, Any] = OmegaConf.to_container(cfg.dataset, resolve=True)  # type: ignore[assignment]
    for key in NOT_TRAINING_DATASET_KEYS:
        dataset.pop(key, None)
    train = datamodule.dataset.splits["train"]
    dataset["train_images"] = len(train)
    dataset["train_labels_sha256"] = hashlib.sha256(np.asarray(train.labels, dtype=np.int64).tobytes()).hexdigest()
    described = backbone.describe()
    return _plain(
        {
            "seed": int(cfg.seed),
            "strategy": strategy,
            "model": {
                "name": backbone.name,
                "source": backbone.source,
                "weights_id": backbone.weights_id,
                "head": backbone.head,
                "data_config": described["data_config"],
            },
            "dataset": dataset,
            "trainer": {
                "world_size": int(world_size),
                **{k: trainer[k] for k in TRAINING_TRAINER_KEYS if k in trainer},
            },
        }
    )


def _plain(value: Any) -> Any:
    """JSON-like values (tuples as lists), so that a setting compares equal after a checkpoint round trip."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- configuration checks, before anything is built ---

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("cosine", "step", "constant")
HEADS = ("linear", "mlp")


def check_finetune_config(cfg: DictConfig) -> None:
    """strategy.* values that cannot train, refused with a ConfigError naming the key. Cheap and
    model-free: callers may run it before building the backbone and the data."""
    strategy = cfg.strategy
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
    optimizer = strategy.get("optimizer") or {}
    _choice("strategy.optimizer.name", optimizer.get("name", "sgd"), OPTIMIZERS)
    _number("strategy.optimizer.lr", optimizer.get("lr"), low=0.0)
    _number("strategy.optimizer.momentum", optimizer.get("momentum", 0.9), low=0.0, high=1.0, high_open=True)
    _number("strategy.optimizer.weight_decay", optimizer.get("weight_decay", 0.0), low=0.0)
    lr_schedule = strategy.get("lr_schedule") or {}
    _choice("strategy.lr_schedule.name", lr_schedule.get("name", "cosine"), LR_SCHEDULES)
    check_whole("strategy.lr_schedule.warmup_steps", lr_schedule.get("warmup_steps", 0), 0)
    if lr_schedule.get("name") == "step":
        _number("strategy.lr_schedule.gamma", lr_schedule.get("gamma", 0.1), low=0.0, low_open=True)
        check_whole("strategy.lr_schedule.step_epochs", lr_schedule.get("step_epochs", 10), 1)
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


def warn_about_warmup(strategy: DictConfig, datamodule: TransferDataModule, world: int, epochs: int) -> None:
    warmup = int(strategy.lr_schedule.get("warmup_steps", 0))
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


def _choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(options)}, got {value!r}")
