"""tlbench-report --scores: do the transferability scores rank models (or datasets) as the accuracy does?

From runs with analysis=layer_curve (its `full` row has the whole embedding's scores): per dataset
and setting (method, classifier, few-shot size: runs of different settings are never pooled), across
the models run on it, Kendall's tau of each score with the run's test accuracy, beside the
naive baseline every score must beat, the backbone's ImageNet top-1 (model.imagenet_top1, from the
weights' model card); per model, across datasets, beside the chance level 1 / classes. Runs of one
(dataset, model) that differ by seed or split are averaged first. Fewer than 3 pairs: no tau.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tlbench.analysis.transferability import correlations
from tlbench.report.collect import method
from tlbench.report.table import metric_name, metric_of

MIN_PAIRS = 3


@dataclass
class ScoreRun:
    dataset: str
    model: str
    setting: str  # setting_of(): method, classifier, few-shot size
    accuracy: float
    scores: dict[str, float | None]
    imagenet_top1: float | None
    num_classes: int


@dataclass
class ScoreReport:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per (group, predictor)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            "| across | group | n | predictor | Kendall τ | 95% interval | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            tau = "–" if r["kendall_tau"] is None else f"{r['kendall_tau']:+.3f}"
            interval = "–" if r["low"] is None else f"{r['low']:+.2f}..{r['high']:+.2f}"
            p = "–" if r["p_value"] is None else f"{r['p_value']:.3g}"
            name = f"{r['predictor']} (baseline)" if r["baseline"] else r["predictor"]
            lines.append(f"| {r['across']} | {r['group']} | {r['n']} | {name} | {tau} | {interval} | {p} |")
        return "\n".join(lines) + "\n" + "".join(f"\n- {note}" for note in self.notes) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        columns = ["across", "group", "n", "predictor", "baseline", "kendall_tau", "low", "high", "p_value"]
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


def setting_of(result: dict[str, Any]) -> str:
    """What a run's scores and accuracy depend on besides the dataset and the model: the method (its
    inputs), the classifier and a few-shot training size. Runs of different settings are never averaged
    or correlated together."""
    classifier = (result.get("classifier") or {}).get("type", "?")
    per_class = ((result.get("config") or {}).get("dataset") or {}).get("train_per_class")
    return f"{method(result)}, {classifier}" + (f", {per_class} per class" if per_class is not None else "")


def score_runs(results: list[dict[str, Any]], metric: str) -> list[ScoreRun]:
    """The runs with whole-embedding scores, averaged over seeds/splits per (dataset, model, setting); a
    score undefined in one of them is undefined for the group."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        rows = ((result.get("analyses") or {}).get("layer_curve") or {}).get("rows", [])
        full = next((r for r in rows if r.get("kind") == "full" and r.get("scores")), None)
        accuracy = metric_of(result, metric)
        if full is None or accuracy is None:
            continue
        key = (str(result.get("dataset")), str(result.get("model")), setting_of(result))
        groups[key].append({**result, "_scores": full["scores"]})
    runs = []
    for (dataset, model, setting), members in sorted(groups.items()):
        names = set.intersection(*(set(m["_scores"]) for m in members))
        scores: dict[str, float | None] = {}
        for name in sorted(names):
            values = [m["_scores"][name] for m in members]
            scores[name] = None if any(v is None for v in values) else sum(map(float, values)) / len(values)
        top1 = [(m.get("backbone") or {}).get("imagenet_top1") for m in members]
        runs.append(
            ScoreRun(
                dataset=dataset,
                model=model,
                setting=setting,
                accuracy=sum(float(metric_of(m, metric)) for m in members) / len(members),  # type: ignore[arg-type]
                scores=scores,
                imagenet_top1=top1[0] if len(set(top1)) == 1 else None,  # runs of other weights disagree
                num_classes=int(members[0].get("num_classes") or 0),
            )
        )
    return runs


def score_report(
    results: list[dict[str, Any]], metric: str = "headline", resamples: int = 1000, seed: int = 0
) -> ScoreReport:
    report = ScoreReport()
    runs = score_runs(results, metric)
    if not runs:
        report.notes.append(
            "no run has transferability scores: run tlbench with analysis=layer_curve (its scores are on by default)"
        )
        return report
    # a group is one dataset (or model) under one setting: "pets · fne, linear_svm"
    by_dataset: dict[str, list[ScoreRun]] = defaultdict(list)
    by_model: dict[str, list[ScoreRun]] = defaultdict(list)
    for run in runs:
        by_dataset[f"{run.dataset} · {run.setting}"].append(run)
        by_model[f"{run.model} · {run.setting}"].append(run)
    for across, key, groups in (("models", "dataset", by_dataset), ("datasets", "model", by_model)):
        for group, members in sorted(groups.items()):
            if len(members) < MIN_PAIRS:
                report.notes.append(
                    f"{key} {group}: {len(members)} {across} with scores, fewer than {MIN_PAIRS}: no correlation"
                )
                continue
            predictors: dict[str, list[float | None]] = {}
            baseline = ""
            if across == "models":
                missing = [m.model for m in members if m.imagenet_top1 is None]
                if missing:
                    report.notes.append(
                        f"dataset {group}: no ImageNet top-1 for {', '.join(missing)} (set model.imagenet_top1), "
                        "so no baseline"
                    )
                else:
                    baseline = "imagenet_top1"
                    predictors[baseline] = [float(m.imagenet_top1) for m in members]  # type: ignore[arg-type]
            else:
                baseline = "chance (1/classes)"
                predictors[baseline] = [1.0 / max(1, m.num_classes) for m in members]
            names = sorted(set.intersection(*(set(m.scores) for m in members)))
            predictors.update({n: [m.scores[n] for m in members] for n in names})
            accuracy = [m.accuracy for m in members]
            for row in correlations(predictors, accuracy, baseline, resamples, seed=seed):
                report.rows.append({"across": across, "group": group, **row})
    names = {metric_name(r, metric) for r in results}
    report.notes.append(
        f"accuracy: test {', '.join(sorted(names))} of each run (mean over seeds/splits of one setting: method, "
        "classifier, few-shot size); scores: the whole "
        "embedding's, from the run's layer curve; tau: Kendall's tau-b, p from scipy.stats.kendalltau; "
        f"interval: percentile bootstrap over the {{models, datasets}} ({resamples} resamples), a spread, "
        "not a sampling interval, with so few pairs"
    )
    return report
