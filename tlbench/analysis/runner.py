"""Which analyses a run asks for, checked before the extraction, then run on its features: each
writes analysis/<name>.json, .csv and .png in the run directory and returns its record."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.analysis.few_shot import check_method_names, few_shot_curve, resolve_methods
from tlbench.analysis.layer_curve import layer_curve
from tlbench.analysis.probe import ProbeResult
from tlbench.analysis.transferability import check_scores
from tlbench.classifiers.knn import DEFAULT_K, DEFAULT_TEMPERATURE
from tlbench.embedding.store import FeatureSet
from tlbench.errors import ConfigError

log = logging.getLogger(__name__)

ANALYSES = ("layer_curve", "few_shot")
ANALYSIS_DIR = "analysis"


def check_analyses(
    settings: dict[str, Any], taps: list[str], strategy: str, few_shot_run: bool, c_auto_kfold: bool
) -> None:
    """Refused before the extraction: an unknown analysis, a layer curve of one tap, few-shot methods
    the taps cannot serve, a k the classifier's C=auto cannot cross-validate. `few_shot_run`: the run
    itself already draws a few-shot train split (dataset.train_per_class); `c_auto_kfold`: the classifier
    picks C by k-fold cross-validation on the training images."""
    unknown = sorted(set(settings) - set(ANALYSES))
    if unknown:
        raise ConfigError(f"unknown analysis {', '.join(unknown)}; available: {', '.join(ANALYSES)}")
    if "layer_curve" in settings and len(taps) < 2:
        raise ConfigError(
            f"analysis=layer_curve needs several taps, and strategy={strategy} extracts {len(taps)}: use "
            "strategy=fne (every layer), or strategy.taps=[...] with several layers"
        )
    if "layer_curve" in settings:
        check_layer_scores(settings["layer_curve"])
    few_shot = settings.get("few_shot")
    if few_shot is None:
        return
    if few_shot_run:
        raise ConfigError(
            "analysis=few_shot draws its own k-shot training sets from the whole train split: leave "
            "dataset.train_per_class=null (it would draw from a subset already drawn)"
        )
    check_method_names(few_shot.get("methods", []), taps)
    shots = few_shot.get("shots") or []
    if not shots or any(k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1) for k in shots):
        raise ConfigError(f"analysis.few_shot.shots must be whole numbers >= 1, or null for all, got {shots!r}")
    seeds = few_shot.get("seeds") or []
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ConfigError(f"analysis.few_shot.seeds must be a non-empty list of whole numbers >= 0, got {seeds!r}")
    if few_shot.get("test", "t") not in ("t", "wilcoxon"):
        raise ConfigError(f"analysis.few_shot.test must be t or wilcoxon, got {few_shot.get('test')!r}")
    smallest = min((k for k in shots if k is not None), default=None)
    if c_auto_kfold and smallest is not None and smallest < 2:
        raise ConfigError(
            f"classifier.C=auto picks C by k-fold cross-validation on the training images, and "
            f"analysis.few_shot.shots has {smallest} per class: set classifier.C to a value (e.g. 1.0, the "
            "FNE's), or shots >= 2"
        )


def check_layer_scores(layer_curve: dict[str, Any]) -> None:
    scores = layer_curve.get("scores") or []
    if isinstance(scores, str):
        raise ConfigError(
            f"analysis.layer_curve.scores must be a list, e.g. [{scores}] (or [] for none), got {scores!r}"
        )
    try:
        check_scores(scores)
    except ValueError as exc:
        raise ConfigError(f"analysis.layer_curve.scores: {exc} (or [] for none)") from None
    k, temperature = _knn_settings(layer_curve)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"analysis.layer_curve.knn.k must be a whole number >= 1, got {k!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature <= 0:
        raise ConfigError(f"analysis.layer_curve.knn.temperature must be > 0, got {temperature!r}")


def _knn_settings(layer_curve: dict[str, Any]) -> tuple[Any, Any]:
    """analysis.layer_curve.knn's k and temperature, DINO's 20 and 0.07 where unset (as knn.py)."""
    knn = layer_curve.get("knn") or {}
    return knn.get("k", DEFAULT_K), knn.get("temperature", DEFAULT_TEMPERATURE)


def run_analyses(
    settings: dict[str, Any],
    features: dict[str, FeatureSet],
    inputs: dict[str, np.ndarray],
    whole: ProbeResult,
    postprocess: dict[str, Any],
    make_classifier: Callable[[], Any],
    metric: str,
    classes: list[str],
    strategy: str,
    run_dir: Path,
    describe: dict[str, str],
) -> dict[str, Any]:
    """Every analysis in `settings` (name -> its settings), records written under run_dir/analysis/.
    `whole`: the run's own fit; `describe`: dataset and model names for the plots."""
    from tlbench.analysis.plots import plot_few_shot, plot_layer_curve, plot_layer_scores, write_rows_csv

    records: dict[str, Any] = {}
    out = run_dir / ANALYSIS_DIR
    if "layer_curve" in settings:
        s = settings["layer_curve"]
        k, temperature = _knn_settings(s)
        record = layer_curve(
            features,
            inputs,
            whole,
            postprocess,
            make_classifier,
            metric,
            len(classes),
            cumulative=bool(s.get("cumulative", False)),
            resamples=int(s.get("resamples", 1000)),
            confidence=float(s.get("confidence", 0.95)),
            scores=check_scores(s.get("scores") or []),
            knn_k=int(k),
            knn_temperature=float(temperature),
        )
        records["layer_curve"] = {**describe, **record}
        write_rows_csv(record["rows"], out / "layer_curve.csv")
        plot_layer_curve(records["layer_curve"], out / "layer_curve.png")
        if record.get("score_correlations"):
            rows = [{"layers": "all", **c} for c in record["score_correlations"]]
            rows += [{"layers": "upper half", **c} for c in record["score_correlations_upper"]]
            write_rows_csv(rows, out / "layer_scores.csv")
            plot_layer_scores(records["layer_curve"], out / "layer_scores.png")
    if "few_shot" in settings:
        s = settings["few_shot"]
        layout = features["train"].layout
        fne_post = postprocess if strategy == "fne" else dict(s["fne_postprocess"])
        last_post = postprocess if strategy == "last_layer" else dict(s["last_layer_postprocess"])
        methods = resolve_methods(s["methods"], layout, fne_post, last_post)
        own = {"fne": "fne", "last_layer": "last_layer"}.get(strategy)
        reuse = {own: whole} if own in s["methods"] and (own != "last_layer" or len(layout) == 1) else {}
        record = few_shot_curve(
            features,
            methods,
            shots=list(s["shots"]),
            seeds=list(s["seeds"]),
            make_classifier=make_classifier,
            metric=metric,
            num_classes=len(classes),
            classes=classes,
            confidence=float(s.get("confidence", 0.95)),
            test=str(s.get("test", "t")),
            resamples=int(s.get("resamples", 1000)),
            reuse=reuse,
        )
        records["few_shot"] = {**describe, **record}
        write_rows_csv(record["points"], out / "few_shot.csv")
        plot_few_shot(records["few_shot"], out / "few_shot.png")
    for name, record in records.items():
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        log.info("%s: %s", name, out / f"{name}.png")
    return records
