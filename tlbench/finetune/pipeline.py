"""The `finetune` strategy from start to end, a peer of embedding/pipeline.py: a new head, block groups
and their unfreezing schedule (assembly.py), Trainer.fit (resumable), then Trainer.test on val and test."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from tlbench.data.datamodule import TransferDataModule
from tlbench.errors import WeightsError
from tlbench.finetune.assembly import build_finetune_module
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.checks import (
    check_batchnorm_batches,
    check_finetune_config,
    warn_about_schedule,
    warn_about_warmup,
)
from tlbench.finetune.curve import EpochCurve
from tlbench.finetune.epoch_seed import EpochSeed
from tlbench.finetune.module import FineTuneModule
from tlbench.finetune.resume import TrainingRecord, check_settings, find_resume
from tlbench.models.backbones import Backbone
from tlbench.results import Outcome
from tlbench.trainer import build_trainer, several_processes

log = logging.getLogger(__name__)


def run_finetune(
    backbone: Backbone,
    datamodule: TransferDataModule,
    strategy: dict[str, Any],
    seed: int,
    trainer: dict[str, Any],
    run_dir: Path,
    logger: Logger | None = None,
    requeue: str = "auto",
    ckpt_path: str | None = None,
    overwrite: bool = False,
    dataset: dict[str, Any] | None = None,
) -> Outcome | None:
    """The Outcome on rank 0; None on the other ranks. `strategy`: the resolved `strategy` group;
    `trainer`: the Trainer's settings (trainer.trainer_settings); `logger`: where Lightning logs the
    per-epoch curves; `ckpt_path`: an explicit checkpoint to resume from; `dataset`: the resolved
    `dataset` group, recorded in the checkpoints with the other training settings."""
    check_finetune_config(strategy)
    epochs = int(strategy["epochs"])
    module = build_finetune_module(backbone, len(datamodule.classes), strategy)
    groups, schedule = module.groups, module.schedule
    warn_about_schedule(schedule, epochs)
    has_val = "val" in datamodule.split_names
    settings = dict(trainer)
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
    settings.update(
        max_epochs=epochs,
        enable_checkpointing=True,
        logger=logger or False,
        num_sanity_val_steps=0,
        # tlbench's samplers split the data over the ranks: evaluation without padded duplicates,
        # training order and augmentation fixed by (seed, epoch) so a resumed run equals a straight one.
        use_distributed_sampler=False,
    )
    callbacks = [ProgressiveUnfreezing(schedule, groups), EpochSeed(seed), checkpoint, last, curve, record]
    fitter = build_trainer(settings, requeue, callbacks=callbacks)
    log.info("fine-tuning %s: %d block groups, schedule %s", backbone.name, len(groups), schedule)

    world = fitter.world_size
    record.settings = training_settings(strategy, seed, dataset or {}, backbone, datamodule, world, settings)
    check_batchnorm_batches(module.backbone, groups, schedule, epochs, datamodule, world)
    warn_about_warmup(int(strategy["lr_schedule"].get("warmup_steps", 0)), datamodule, world, epochs)
    # Last of the checks: with overwrite=true this removes the run directory's earlier state.
    resume = find_resume(ckpt_path, run_dir, overwrite=overwrite)
    resume_path = resume.path if resume else None
    if resume:
        check_checkpoint(module, resume.path, record.settings, own=resume.own, epochs=epochs)

    if datamodule.shuffle_seed is None:
        raise ValueError("fine-tuning needs the datamodule's shuffle_seed (the seed of the training order)")
    t0 = time.perf_counter()
    # the datamodule deals the images to the ranks itself (use_distributed_sampler=False above)
    fitter.fit(module, datamodule=datamodule, ckpt_path=resume_path)
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
        # one split at a time (Lightning's test hook takes no split): each gets its own metrics
        loader = datamodule.evaluation_loader(split)
        out = fitter.test(module, dataloaders=loader, ckpt_path=tested if tested == "best" else None)
        metrics[split] = {k: float(out[0][f"test/{k}"]) for k in ("top1", "mean_per_class")}
        evaluated[split] = int(out[0]["test/images"])
    test_s = time.perf_counter() - t0
    skipped = {
        split: [datamodule.dataset.splits[split].describe(i) for i in indices]
        for split, indices in module.unreadable_on_all_ranks().items()
    }
    for split, files in skipped.items():
        log.warning("%d unreadable images skipped in %s: %s", len(files), split, ", ".join(files[:5]))
    if not fitter.is_global_zero:  # one writer under DDP
        return None
    return Outcome(
        metrics=metrics,
        feature_dim=module.head_in_features,
        timings={
            # training of the evaluated weights over every attempt (resumed ones included), then this one's
            "fit": round(earlier_s + fit_s, 3),
            "fit_this_attempt": round(fit_s, 3),
            "evaluate": round(test_s, 3),
        },
        skipped_files=skipped,
        classifier={
            "type": "finetune",
            "head": strategy["head"],
            "optimizer": strategy["optimizer"],
            "lr_schedule": strategy["lr_schedule"],
            "schedule": strategy["schedule"],
            "groups": len(groups),
            "epochs": epochs,
            "evaluated_checkpoint": tested if tested == "best" else "last epoch (no validation split to select on)",
            "checkpoint_dir": str(run_dir / "checkpoints"),
            "resumed_from": resume_path,
            "training_attempts": attempts,  # this one and the earlier ones its checkpoint continues
            "evaluated_images": evaluated,  # summed over ranks: each image once
        },
        curve=rows,
        world_size=world,
    )


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
    strategy: dict[str, Any],
    seed: int,
    dataset: dict[str, Any],
    backbone: Backbone,
    datamodule: TransferDataModule,
    world_size: int,
    trainer: dict[str, Any],
) -> dict[str, Any]:
    """Everything that changes what a fine-tuning run trains, recorded in its checkpoints and compared
    on resume: the strategy (epochs, head, schedule, optimizer, LR schedule, augmentation, ...), the
    seed (data order, augmentation, dropout), the model and its weights, the training data (dataset
    parameters, few-shot and validation subsets, batch size, the training labels) and the Trainer
    settings that change the optimization, with the world size (each rank takes its own batches: the
    effective batch and the order per rank follow it). Not compared: where the data lies
    (dataset.root, which may be staged anew for each job), workers, loggers, progress bars."""
    strategy = {k: v for k, v in strategy.items() if k != "taps"}
    dataset = {k: v for k, v in dataset.items() if k not in NOT_TRAINING_DATASET_KEYS}
    train = datamodule.dataset.splits["train"]
    dataset["train_images"] = len(train)
    dataset["train_labels_sha256"] = hashlib.sha256(np.asarray(train.labels, dtype=np.int64).tobytes()).hexdigest()
    described = backbone.describe()
    return _plain(
        {
            "seed": int(seed),
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
