"""run(cfg) -> Result: the wiring, and the only reader of the composed config.

It checks the config, builds the backbone and the datamodule from their config groups' `_target_`s,
hands plain values to the strategy's pipeline (STRATEGIES: embedding/pipeline.py for `last_layer`
and `fne`, finetune/pipeline.py for `finetune`), and turns what the pipeline measured into the run's
one Result, written to results.json and logged once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pytorch_lightning.loggers import Logger, WandbLogger

from tlbench.data import TransferDataModule
from tlbench.data.datamodule import check_loader_settings
from tlbench.data.subsets import write_subset_rows
from tlbench.data.transforms import eval_transform, train_augmentation
from tlbench.distributed.environment import check_allocation, check_split_sizes
from tlbench.embedding.pipeline import run_extraction
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.errors import ConfigError, TlbenchError
from tlbench.finetune.checks import check_finetune_config
from tlbench.finetune.pipeline import run_finetune
from tlbench.finished_run import check_not_finished
from tlbench.models import Backbone, resolve_taps
from tlbench.models.taps import VGG16_FNE_DIM
from tlbench.provenance import provenance
from tlbench.results import Outcome, Result, write_results
from tlbench.tracking.loggers import build_logger, log_result
from tlbench.trainer import trainer_settings

log = logging.getLogger(__name__)

# Dataset config keys that configure loading; the rest are the dataset builder's parameters.
LOADER_KEYS = ("batch_size", "num_workers", "val_fraction", "val_seed", "train_per_class", "few_shot_seed")


def run(cfg: DictConfig, run_dir: str | Path) -> Result | None:
    """The run's Result on rank 0; None on the other ranks of a multi-process run."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    strategy = _check_config(cfg)
    check_not_finished(run_dir, overwrite=bool(cfg.get("overwrite", False)))
    # values that cannot work, refused before the backbone is built (the pipelines check them again)
    check_loader_settings(**{k: cfg.dataset[k] for k in LOADER_KEYS if k in cfg.dataset})
    strategy.check(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    backbone: Backbone = _build(instantiate, "model", cfg.model, _convert_="all")
    augment = _plain(cfg.strategy.augment) if strategy.trains else None
    datamodule: TransferDataModule = _build(instantiate, "dataset", cfg.dataset)(
        transform=eval_transform(backbone.data_config),
        train_transform=train_augmentation(backbone.data_config, augment) if augment is not None else None,
        input_size=backbone.data_config["input_size"],
        shuffle_seed=int(cfg.seed) if strategy.trains else None,  # fine-tuning's training order
    )
    check_split_sizes(datamodule.split_sizes(), cfg.trainer.devices, cfg.trainer.num_nodes)
    config = _plain(cfg)
    # Lightning logs fine-tuning's curves while it trains; an extraction run logs its Result at the end.
    logger = build_logger(config.get("logger"), config) if strategy.trains else None

    outcome = strategy.pipeline(cfg, backbone, datamodule, run_dir, logger)
    if outcome is None:  # a rank other than 0: rank 0 writes the Result
        return None
    result = Result(
        dataset=datamodule.dataset.name,
        model=backbone.name,
        strategy=cfg.strategy.name,
        headline_metric=datamodule.dataset.metric,
        split_sizes=datamodule.split_sizes(),
        num_classes=len(datamodule.classes),
        seed=int(cfg.seed),
        backbone=backbone.describe(),
        config=config,
        provenance=provenance(),
        run_dir=str(run_dir),
        subsets={split: subset.record() for split, subset in datamodule.subsets.items()},
        **{**asdict(outcome), "timings": {**outcome.timings, "total": round(time.perf_counter() - started, 3)}},
    )
    write_subset_rows(run_dir, datamodule.subsets)
    write_results(result, run_dir)
    if strategy.trains:  # the CSV logger has every epoch and the test already; W&B gets the tables too
        if isinstance(logger, WandbLogger):
            log_result(logger, result, config_logged=True)
    else:
        logger = build_logger(config.get("logger"), config)
        if logger is not None:
            log_result(logger, result, config_logged=isinstance(logger, WandbLogger))
            logger.finalize("success")
    return result


# --- the strategies: each turns the config into plain values for its pipeline ---


def _extraction(
    cfg: DictConfig, backbone: Backbone, datamodule: TransferDataModule, run_dir: Path, logger: Logger | None
) -> Outcome | None:
    taps_spec = _plain(cfg.strategy.taps)
    taps = resolve_taps(backbone.model, taps_spec, backbone.head)
    log.info("%s (%s, weights %s): %d taps", backbone.name, backbone.source, backbone.weights_id, len(taps))
    # Built before the expensive extraction: a bad value fails now.
    post_settings = _plain(cfg.strategy.postprocess)
    postprocess = _build(FeaturePostprocess, "strategy.postprocess", **post_settings)
    # the dataset's metric scores the cross-validation of classifier.C=auto
    classifier = _build(instantiate, "classifier", cfg.classifier, metric=datamodule.dataset.metric)
    analyses = _plain(cfg.get("analysis")) or {}  # conf/analysis/: fitted on the same features afterwards
    presets = taps_spec if isinstance(taps_spec, list) else [taps_spec]
    return run_extraction(
        backbone,
        taps,
        datamodule,
        postprocess,
        post_settings,
        classifier,
        trainer=trainer_settings(_plain(cfg.trainer)),
        run_dir=run_dir,
        cache_dir=Path(cfg.paths.cache_dir) if cfg.cache else None,
        requeue=str(cfg.slurm.requeue),
        expected_dim=VGG16_FNE_DIM if {"vgg16_fne", "vgg16_fne_pre_relu"} & set(presets) else None,
        strategy=str(cfg.strategy.name),
        analyses=analyses,
        make_classifier=lambda: instantiate(cfg.classifier, metric=datamodule.dataset.metric),
    )


def _finetune(
    cfg: DictConfig, backbone: Backbone, datamodule: TransferDataModule, run_dir: Path, logger: Logger | None
) -> Outcome | None:
    return run_finetune(
        backbone,
        datamodule,
        strategy=_plain(cfg.strategy),
        seed=int(cfg.seed),
        trainer=trainer_settings(_plain(cfg.trainer)),
        run_dir=run_dir,
        logger=logger,
        requeue=str(cfg.slurm.requeue),
        ckpt_path=cfg.trainer.get("ckpt_path"),
        overwrite=bool(cfg.get("overwrite", False)),
        dataset=_plain(cfg.dataset),
    )


@dataclass(frozen=True)
class Strategy:
    pipeline: Callable[[DictConfig, Backbone, TransferDataModule, Path, Logger | None], Outcome | None]
    check: Callable[[DictConfig], None] = lambda cfg: None  # cheap checks before anything is built
    trains: bool = False  # trains with Lightning: a training augmentation, a logger while it runs


STRATEGIES = {
    "last_layer": Strategy(_extraction),
    "fne": Strategy(_extraction),
    "finetune": Strategy(_finetune, check=lambda cfg: check_finetune_config(_plain(cfg.strategy)), trains=True),
}


# --- the config ---


def _check_config(cfg: DictConfig) -> Strategy:
    """Values not set, an unknown strategy, an interpolation that cannot resolve, an allocation that
    cannot start: refused before anything is built. Returns the strategy."""
    missing = _missing_values(cfg)
    if missing:
        raise ConfigError(f"required values are not set: {', '.join(missing)} (e.g. dataset.root=/path/to/images)")
    strategy = STRATEGIES.get(cfg.strategy.name)
    if strategy is None:
        raise ConfigError(f"strategy {cfg.strategy.name!r} is not implemented; available: {', '.join(STRATEGIES)}")
    if strategy.trains and cfg.get("analysis"):
        raise ConfigError(
            f"analysis={','.join(cfg.analysis)} fits probes on extracted features, and strategy={cfg.strategy.name} "
            "extracts none: use strategy=fne (every layer) or strategy=last_layer"
        )
    try:  # an unset environment variable in an interpolation, found now rather than mid-run
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as exc:
        cause = exc.msg.splitlines()[0].split("while resolving interpolation: ")[-1].strip('"')
        raise ConfigError(f"cannot resolve {exc.full_key}: {cause}; set it, or override {exc.full_key}=...") from None
    check_allocation(cfg.trainer.devices, cfg.trainer.num_nodes)
    return strategy


def _plain(node: Any) -> Any:
    """A config node as plain, resolved Python values (dicts, lists, scalars)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _build(factory: Any, what: str, *args: Any, **kwargs: Any) -> Any:
    """Build a component from config. tlbench's own errors pass through; any other ValueError or
    TypeError becomes a ConfigError naming the config group."""
    try:
        return factory(*args, **kwargs)
    except Exception as exc:  # hydra wraps the target's error in InstantiationException
        cause = exc.__cause__ or exc
        if isinstance(cause, TlbenchError):
            raise cause from None
        hint = ""
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            # e.g. classifier=knn under protocol=fne_table, which pins a linear classifier's C
            hint = (
                f": a key of {what} that this option does not take, set by an override or a preset "
                "(protocol=..., +experiment=...); `tlbench <your overrides> --cfg job` shows the composed config"
            )
        raise ConfigError(f"{what}: {cause}{hint}") from exc


def _missing_values(node: Any, prefix: str = "") -> list[str]:
    """Keys still at Hydra's `???`, found without resolving interpolations (${hydra:...} included)."""
    missing: list[str] = []
    if isinstance(node, DictConfig):
        for key in node:
            if OmegaConf.is_missing(node, key):
                missing.append(f"{prefix}{key}")
            elif not OmegaConf.is_interpolation(node, key):
                missing.extend(_missing_values(node._get_node(key), f"{prefix}{key}."))
    return missing
