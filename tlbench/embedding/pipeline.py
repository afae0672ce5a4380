"""The extraction strategies (`last_layer`, `fne`) from start to end, a peer of finetune/pipeline.py:

1. the features of every split: from the FeatureStore when cached, else Trainer.predict on one or
   several ranks, every batch streamed to disk (several ranks: shards merged by rank 0, shards.py);
2. checks: no split without readable images, no NaN/inf column, no class lost to skipped files;
3. post-processing fitted on the train rows (the FNE's standardization and discretization);
4. the classifier fitted on the train rows, then evaluated on val (when there is one) and test.

run.py builds the parts from the config and hands them over as plain values."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.plugins.environments import LightningEnvironment

from tlbench.analysis.probe import ProbeResult
from tlbench.analysis.runner import check_analyses, run_analyses
from tlbench.data.datamodule import TransferDataModule
from tlbench.data.registry import DatasetSplits
from tlbench.data.samples import ImageSamples
from tlbench.distributed.environment import launched_world_size, process_rank, requeue_owner
from tlbench.distributed.requeue import requeue_on_sigusr1
from tlbench.embedding.classifier_fit import fit_classifier, selects_on_val
from tlbench.embedding.extractor import FeatureExtractor
from tlbench.embedding.postprocess import FeaturePostprocess
from tlbench.embedding.prepared import prepare_inputs
from tlbench.embedding.progress import ExtractionProgressBar
from tlbench.embedding.shards import check_coverage, gather_features, shard_name
from tlbench.embedding.store import FeatureSet, FeatureStore, FeatureWriter, cache_key, row_slices
from tlbench.embedding.views import row_view
from tlbench.errors import ConfigError, DatasetError, ImageDecodeError
from tlbench.metrics import classification_metrics
from tlbench.models import Backbone, Tap
from tlbench.predictions import SplitPredictions, write_predictions
from tlbench.results import Outcome
from tlbench.trainer import build_trainer

log = logging.getLogger(__name__)

SCRATCH_DIR = "features"  # features of a run with cache=false, removed when the run ends


def run_extraction(
    backbone: Backbone,
    taps: list[Tap],
    datamodule: TransferDataModule,
    postprocess: FeaturePostprocess,
    postprocess_settings: dict[str, Any],
    classifier: Any,
    trainer: dict[str, Any],
    run_dir: Path,
    cache_dir: Path | None,
    requeue: str = "auto",
    expected_dim: int | None = None,
    strategy: str = "fne",
    analyses: dict[str, Any] | None = None,
    make_classifier: Callable[[], Any] | None = None,
) -> Outcome | None:
    """The Outcome on rank 0; None on the other ranks of a multi-process run (their share of the
    features is with rank 0). `trainer`: the Trainer's settings (trainer.trainer_settings);
    `cache_dir` None: no cache, the features stream into the run directory and are removed at the end;
    `expected_dim`: the feature dimension a preset fixes (VGG16's FNE), checked after extraction;
    `analyses`: name -> settings of the analyses fitted on the same features afterwards
    (tlbench/analysis/), each probe with a classifier from `make_classifier` (built like `classifier`)."""
    analyses = analyses or {}
    if analyses:
        check_analyses(
            analyses,
            [str(t) for t in taps],
            strategy,
            few_shot_run=datamodule.train_per_class is not None,
            c_auto_kfold=getattr(classifier, "C", None) == "auto" and not selects_on_val(classifier),
        )
        if make_classifier is None:
            raise ValueError("analyses need make_classifier, a factory of fresh classifiers")
    if selects_on_val(classifier) and "val" not in datamodule.split_names:
        raise ConfigError(
            "classifier.c_selection=validation scores C on the val split, and this dataset has none: use its "
            "official val split (e.g. flowers102, dtd, fgvc_aircraft) or hold one out with dataset.val_fraction=0.2"
        )
    name = datamodule.dataset.name
    scratch_owner = True
    try:
        t0 = time.perf_counter()
        extracted = extract_splits(backbone, taps, datamodule, trainer, run_dir, cache_dir)
        if extracted is None:  # another rank than 0: its share of the features is with rank 0
            scratch_owner = False  # rank 0 may still be merging into the scratch folder
            return None
        features, cache, world_size = extracted
        extract_s = time.perf_counter() - t0
        # The network is done once the features are on disk: its weights (528 MiB for VGG16) are
        # freed (moved to the meta device, the module's structure kept) so that post-processing and
        # the fit, whose memory grows with the data set, do not add to them.
        backbone.model.to("meta")

        skipped = {
            split: [datamodule.dataset.splits[split].describe(i) for i in fs.skipped]
            for split, fs in features.items()
            if fs.skipped
        }
        for split, files in skipped.items():
            log.warning("%d unreadable images skipped in %s: %s", len(files), split, ", ".join(files[:5]))
        train = features["train"]
        check_features(features, name)
        if expected_dim is not None and train.dim != expected_dim:
            raise RuntimeError(f"this tap preset must give {expected_dim} dimensions, got {train.dim}")
        listed = {split: datamodule.dataset.splits[split].labels for split in features}
        check_classes_seen(features, datamodule.classes, listed)

        # --- post-processing and classifier (no Trainer runs: tlbench handles the requeue signal) ---
        with requeue_on_sigusr1(requeue_owner(requeue)):
            t0 = time.perf_counter()
            store = FeatureStore(cache_dir) if cache_dir is not None else None
            inputs, post_record = prepare_inputs(postprocess, postprocess_settings, features, store)
            evaluated = fit_classifier(classifier, inputs, features)
            fit_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            predictions = {split: np.asarray(classifier.predict(inputs[split])) for split in evaluated}
            metrics = {
                split: classification_metrics(features[split].labels, predictions[split], len(datamodule.classes))
                for split in evaluated
            }
            evaluate_s = time.perf_counter() - t0
            write_predictions(
                run_dir,
                {s: SplitPredictions(features[s].indices, features[s].labels, predictions[s]) for s in evaluated},
            )

            t0 = time.perf_counter()
            records = {}
            if analyses:
                assert make_classifier is not None
                records = run_analyses(
                    analyses,
                    features,
                    inputs,
                    ProbeResult(predictions, metrics, fit_s),
                    postprocess_settings,
                    make_classifier,
                    datamodule.dataset.metric,
                    datamodule.classes,
                    strategy,
                    run_dir,
                    {"dataset": name, "model": backbone.name},
                )
            analyses_s = time.perf_counter() - t0

        return Outcome(
            metrics=metrics,
            feature_dim=train.dim,
            timings={
                "extract": round(extract_s, 3),
                **_extraction_rate(features, cache, extract_s),
                "fit": round(fit_s, 3),
                "evaluate": round(evaluate_s, 3),
                **({"analyses": round(analyses_s, 3)} if analyses else {}),
            },
            cache=cache,
            skipped_files=skipped,
            taps=[str(t) for t in taps],
            postprocess=post_record,
            classifier=classifier.describe(),
            layout=train.layout,
            world_size=world_size,
            analyses=records,
        )
    finally:  # the features of a run without cache were on disk only for this run
        if cache_dir is None and scratch_owner:
            shutil.rmtree(run_dir / SCRATCH_DIR, ignore_errors=True)


# --- 1. features of every split ---


def extraction_key(
    backbone: Backbone,
    taps: list[Tap],
    transform: Any,
    dataset: DatasetSplits,
    split: str,
    precision: Any,
    channels_last: bool = False,
    samples: ImageSamples | None = None,
) -> str:
    """The FeatureStore key: everything that determines the features of one split. `samples`: the
    images extracted, when not `dataset.splits[split]` (a source split whose subset the run uses)."""
    return cache_key(
        backbone=backbone.name,
        source=backbone.source,
        weights=backbone.weights_id,
        data_config=backbone.data_config,
        taps=[str(t) for t in taps],
        transform=repr(transform),
        precision=str(precision),
        channels_last=channels_last,
        dataset=dataset.name,
        dataset_params=dataset.params,
        split=split,
        content=(samples if samples is not None else dataset.splits[split]).fingerprint(),
    )


def extract_splits(
    backbone: Backbone,
    taps: list[Tap],
    datamodule: TransferDataModule,
    trainer: dict[str, Any],
    run_dir: Path,
    cache_dir: Path | None,
) -> tuple[dict[str, FeatureSet], dict[str, str], int] | None:
    """Features of every split, from the FeatureStore when present, else by Trainer.predict on one
    or several ranks, with the cache outcome per split and the number of ranks. Rank 0 gets them
    all; other ranks get None once their share is written. What is extracted and cached are the
    dataset's own splits (`datamodule.sources`); a split that is a subset of one (a few-shot draw, a
    validation holdout) is then its rows (views.row_view): every draw reuses one extraction."""
    name = datamodule.dataset.name
    store = FeatureStore(cache_dir) if cache_dir is not None else None
    keys = {
        split: extraction_key(
            backbone,
            taps,
            datamodule.transform,
            datamodule.dataset,
            split,
            trainer.get("precision"),
            backbone.channels_last,
            samples=datamodule.sources[split],
        )
        for split in datamodule.source_names
    }

    def look_up() -> tuple[dict[str, FeatureSet | None], list[str]]:
        found = {split: _cached(store, key, datamodule, split) for split, key in keys.items()}
        return found, [split for split, fs in found.items() if fs is None]

    # Ranks that srun or torchrun started (rank > 0 in the environment) leave the cache to rank 0,
    # which tells them what to extract (possibly nothing); they would read every cached matrix
    # only to drop it.
    stored, missing = look_up() if process_rank() == 0 else ({}, None)
    predictor = None
    if missing is None or missing or launched_world_size() > 1:
        # images/s on the bar; a second progress bar callback would be refused when bars are off
        bar = [ExtractionProgressBar()] if trainer.get("enable_progress_bar", True) else []
        predictor = build_trainer(trainer, callbacks=bar)
        if predictor.world_size > 1:
            missing = _agree_on_missing(predictor, missing)
        if missing is None:  # a rank variable set, yet one process: look for itself
            stored, missing = look_up()
    rank0 = predictor is None or predictor.global_rank == 0
    features: dict[str, FeatureSet] = {}
    cache: dict[str, str] = {}
    # Without the cache the features still stream to disk, into the run directory (removed at the end).
    target = store if store is not None else FeatureStore(run_dir / SCRATCH_DIR)
    for split in datamodule.source_names:
        if split not in missing:
            if rank0:
                log.info("cache hit: %s features of %s/%s from %s", split, name, split, target.path(keys[split]))
                features[split], cache[split] = stored[split], "hit"  # type: ignore[assignment]
            continue
        assert predictor is not None
        merged = extract_split(predictor, backbone, taps, datamodule, split, target, keys[split], run_dir)
        if merged is not None:  # rank 0 (the others' shares are with rank 0 now)
            features[split], cache[split] = merged, "miss"
    if not rank0:
        return None
    world_size = predictor.world_size if predictor is not None and missing else 1
    for split, subset in datamodule.subsets.items():
        features[split] = row_view(features[subset.source], subset.rows)
        cache.setdefault(split, cache[subset.source])
    return {s: features[s] for s in datamodule.split_names}, {s: cache[s] for s in datamodule.split_names}, world_size


def extract_split(
    trainer: pl.Trainer,
    backbone: Backbone,
    taps: list[Tap],
    datamodule: TransferDataModule,
    split: str,
    target: FeatureStore,
    key: str,
    run_dir: Path,
) -> FeatureSet | None:
    """One source split (the dataset's own, `datamodule.sources`) through Trainer.predict, each batch
    streamed to disk: straight into `target[key]` with one process; with several, each rank's share
    into a shard in the run directory (the same for all ranks of this job and never another job's),
    merged by rank 0."""
    name = datamodule.dataset.name
    samples = datamodule.sources[split]
    world = trainer.world_size
    what = f"{name}/{split}"
    log.info("extracting %s: %d images on %d process(es)", what, len(samples), world)
    shards = FeatureStore(run_dir / "shards" / split)

    def open_writer(rank: int, world_size: int) -> FeatureWriter:
        return target.writer(key) if world_size == 1 else shards.writer(shard_name(rank, world_size))

    extractor = FeatureExtractor(backbone.model, taps, open_writer, channels_last=backbone.channels_last)
    t0 = time.perf_counter()
    try:
        trainer.predict(extractor, dataloaders=datamodule.loader(split, source=True), return_predictions=False)
    except BaseException:
        if extractor.writer is not None:
            extractor.writer.abort()
        raise
    elapsed = time.perf_counter() - t0
    log.info(
        "extracted %s: %d images in %.1f s (%.1f images/s on this rank)",
        what,
        extractor.images,
        elapsed,
        extractor.images / max(elapsed, 1e-9),
    )
    assert extractor.writer is not None
    meta = {"backbone": backbone.describe(), "split": split, "dataset": name, "world_size": world}
    if world == 1:
        try:  # before the commit: a bad entry must never become current
            check_coverage(*extractor.writer.seen(), len(samples), what)
        except RuntimeError:
            extractor.writer.abort()
            raise
        return target.commit(key, extractor.writer, extractor.layout, meta)
    rank = trainer.global_rank
    shards.commit(shard_name(rank, world), extractor.writer, extractor.layout, {**meta, "rank": rank})
    merged = gather_features(shards, len(samples), trainer.strategy, what, target, key, meta)
    with contextlib.suppress(OSError):  # the last split's shards are gone: the folder is empty
        shards.root.parent.rmdir()
    return merged


def _cached(store: FeatureStore | None, key: str, datamodule: TransferDataModule, split: str) -> FeatureSet | None:
    if store is None:
        return None
    stored = store.load(key)
    if stored is not None and _any_now_readable(datamodule.sources[split], stored.skipped):
        log.info("images skipped when %s/%s was cached now decode: extracting again", datamodule.dataset.name, split)
        return None
    return stored


def _any_now_readable(samples: ImageSamples, skipped: list[int]) -> bool:
    """A cached split keeps its skipped images out; re-extract once one of them decodes again
    (a file repaired, or a transient read error on a network file system)."""
    for index in skipped:
        try:
            samples.load(index)
            return True
        except ImageDecodeError:
            continue
    return False


def _agree_on_missing(trainer: pl.Trainer, missing: list[str] | None) -> list[str] | None:
    """Rank 0's view of the cache decides for all ranks: a rank that saw a hit while another saw a
    miss (a concurrent job writing the same entry) would leave the other waiting in predict forever.
    Needs the process group now, so only where every rank was started outside Lightning (srun,
    torchrun). When Lightning starts them (LightningEnvironment) rank 0 is not connected until
    predict launches the others; they check the cache alike, a race remains possible there."""
    strategy = trainer.strategy
    if isinstance(strategy.cluster_environment, LightningEnvironment):
        return missing
    strategy.setup_environment()  # idempotent: predict finds the process group initialized
    return strategy.broadcast(missing, src=0)


def _extraction_rate(features: dict[str, FeatureSet], cache: dict[str, str], seconds: float) -> dict[str, float]:
    """Images per second over the splits extracted now (none on a full cache hit)."""
    images = sum(len(fs.labels) + len(fs.skipped) for split, fs in features.items() if cache[split] == "miss")
    return {"extract_images_per_s": round(images / seconds, 2)} if images and seconds > 0 else {}


# --- 2. checks ---


def check_features(features: dict[str, FeatureSet], name: str) -> None:
    """Every split has readable images and finite features."""
    for split, fs in features.items():
        if len(fs.labels) == 0:
            raise DatasetError(f"no readable image in {name}/{split}; see the skipped files above")
        bad = fs.nonfinite_columns  # counted by the FeatureWriter; else read (in chunks: maybe a memory map)
        if bad is None:
            columns = np.zeros(fs.dim, bool)
            for part in row_slices(len(fs.labels), fs.dim, 4):
                columns |= ~np.isfinite(fs.features[part]).all(axis=0)
            bad = int(columns.sum())
        if bad:
            raise DatasetError(
                f"the backbone produced NaN/inf features on {name}/{split} "
                f"({bad} columns); with reduced precision "
                "this is usually an overflow: try trainer.precision=32-true"
            )


def check_classes_seen(features: dict[str, FeatureSet], classes: list[str], listed: dict[str, np.ndarray]) -> None:
    """No class loses all its images of a split to skipping, and every evaluated class was trained
    on. A class whose images were all skipped would otherwise vanish: fewer classes, and a mean
    per-class accuracy over the rest, with only the skipped-files warning to tell. `listed`: each
    split's labels as listed (a class a split does not list at all is not lost)."""
    for split, fs in features.items():
        lost = sorted(set(np.unique(listed[split]).tolist()) - set(np.unique(fs.labels).tolist()))
        if lost:
            names = [classes[i] for i in lost]
            raise DatasetError(
                f"{len(lost)} of {len(classes)} classes have no readable image in the {split} split (every listed "
                f"image of theirs was skipped as undecodable, see the skipped files above): {names[:10]}"
                + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                + ". Replace the unreadable files (`tlbench-data verify` lists them) or remove those classes."
            )
    seen = set(np.unique(features["train"].labels).tolist())
    for split, fs in features.items():
        unseen = sorted(set(np.unique(fs.labels).tolist()) - seen)
        if unseen:
            raise DatasetError(
                f"the {split} split has classes with no training image: {[classes[i] for i in unseen]}. "
                "Add training images for them or remove them from the evaluation split."
            )
