"""The fine-tuning run: new head, block groups, schedule, Trainer.fit then Trainer.test."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from torch import nn
from torch.utils.data import DataLoader

from tlbench.data.datamodule import TransferDataModule
from tlbench.distributed.samplers import EpochShuffleSampler, ShardSampler
from tlbench.errors import ConfigError, WeightsError
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.curve import EpochCurve
from tlbench.finetune.epoch_seed import EpochSeed
from tlbench.finetune.groups import block_groups
from tlbench.finetune.module import FineTuneModule, build_head, replace_head
from tlbench.finetune.resume import resume_checkpoint
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
    strategy = cfg.strategy
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
    has_val = "val" in datamodule.split_names
    settings = trainer_settings(cfg)
    if several_processes(settings) and settings.get("strategy", "auto") == "auto":
        # Frozen groups have requires_grad=False, so DDP must expect parameters without gradients.
        settings["strategy"] = "ddp_find_unused_parameters_true"
    ckpt_path = resume_checkpoint(cfg.trainer.get("ckpt_path"), run_dir)
    if ckpt_path:
        check_checkpoint(module, ckpt_path)
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
    logger = build_logger(cfg)  # Lightning logs the per-epoch curves (train loss, val accuracy)
    settings.update(
        max_epochs=int(strategy.epochs),
        enable_checkpointing=True,
        logger=logger or False,
        num_sanity_val_steps=0,
        # tlbench's samplers split the data over the ranks: evaluation without padded duplicates,
        # training order and augmentation fixed by (seed, epoch) so a resumed run equals a straight one.
        use_distributed_sampler=False,
    )
    callbacks = [ProgressiveUnfreezing(schedule, groups), EpochSeed(int(cfg.seed)), checkpoint, last, curve]
    trainer = build_trainer(cfg, settings, callbacks=callbacks)
    log.info("fine-tuning %s: %d block groups, schedule %s", backbone.name, len(groups), schedule)

    world = trainer.world_size

    def loader(split: str, training: bool = False) -> DataLoader:
        size = len(datamodule.dataset.splits[split])
        if training:
            sampler = EpochShuffleSampler(size, int(cfg.seed), epoch=lambda: trainer.current_epoch)
        else:
            sampler = ShardSampler(size)
        return datamodule.loader(split, training=training, sampler=sampler, world_size=world)

    t0 = time.perf_counter()
    trainer.fit(
        module,
        train_dataloaders=loader("train", training=True),
        val_dataloaders=loader("val") if has_val else None,
        ckpt_path=ckpt_path,
    )
    fit_s = time.perf_counter() - t0
    rows = list(curve.rows)  # testing from the best checkpoint restores the curve as it was then
    t0 = time.perf_counter()
    # The best checkpoint on val; without val, the final weights (recorded as such).
    tested = "best" if has_val and checkpoint.best_model_path else "last"
    metrics, evaluated = {}, {}
    for split in [s for s in ("val", "test") if s in datamodule.split_names]:
        out = trainer.test(module, dataloaders=loader(split), ckpt_path=tested if tested == "best" else None)
        metrics[split] = {k: float(out[0][f"test/{k}"]) for k in ("top1", "mean_per_class")}
        evaluated[split] = int(out[0]["test/images"])
    test_s = time.perf_counter() - t0

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
            "fit": round(fit_s, 3),
            "evaluate": round(test_s, 3),
            "total": round(time.perf_counter() - started, 3),
        },
        cache={},
        skipped_files={},
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
            "epochs": int(strategy.epochs),
            "evaluated_checkpoint": tested if tested == "best" else "last epoch (no validation split to select on)",
            "checkpoint_dir": str(run_dir / "checkpoints"),
            "resumed_from": ckpt_path,
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


def check_checkpoint(module: FineTuneModule, ckpt_path: str) -> None:
    """Refuse, before training, a checkpoint of another model or head (Lightning would fail later
    with a long size-mismatch trace)."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise WeightsError(f"trainer.ckpt_path={path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False).get("state_dict", {})
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"checkpoint {path} is not of this model/head: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), shape mismatches {shapes[:3]}"
        )
