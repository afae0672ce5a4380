"""The `logger` config group turned into a Lightning logger, and a finished Result written to it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import get_method, instantiate

if TYPE_CHECKING:  # annotations only: importing this module does not load Lightning
    from pytorch_lightning.loggers import Logger

    from tlbench.results import Result


def build_logger(settings: Mapping[str, Any] | None, run_config: dict[str, Any]) -> Logger | None:
    """The logger from the resolved `logger` group; None for logger=none. A factory that takes
    `run_config` (the W&B one) gets the run's resolved config, so it is logged once, at init."""
    if not settings or "_target_" not in settings:
        return None
    target = get_method(settings["_target_"]) if not isinstance(settings["_target_"], type) else settings["_target_"]
    if "run_config" in inspect.signature(target).parameters:
        # _recursive_=False: the config holds _target_ nodes (the Trainer) that must stay data
        return instantiate(dict(settings), run_config=run_config, _recursive_=False, _convert_="all")
    return instantiate(dict(settings))


def log_result(logger: Logger, result: Result, config_logged: bool) -> None:
    """Final metrics (split/metric), timings and dimensions, the results table and, for fine-tuning,
    the per-epoch curve; the flattened config too unless the logger already has it. With analyses:
    their scalars (analysis_scalars) and, on W&B, their tables, figures and a line plot of the layers."""
    if not config_logged:
        logger.log_hyperparams(flatten(result.config))
    values: dict[str, Any] = {f"{split}/{k}": v for split, m in result.metrics.items() for k, v in m.items()}
    values.update({f"time/{k}": v for k, v in result.timings.items()})
    values["feature_dim"] = result.feature_dim
    scalars = analysis_scalars(result.analyses) if result.analyses else {}
    # numbers with the final metrics (one row of metrics.csv); text (the best layer's name) to the W&B summary
    values.update({k: v for k, v in scalars.items() if _is_number(v)})
    logger.log_metrics(values)
    log_table = getattr(logger, "log_table", None)  # W&B tables; CSV has none
    if log_table is not None:
        rows = [
            [split, m["top1"], m["mean_per_class"], result.split_sizes.get(split)]
            for split, m in result.metrics.items()
        ]
        log_table(key="results", columns=["split", "top1", "mean_per_class", "images"], data=rows)
        if result.curve:
            columns = sorted({k for row in result.curve for k in row if not isinstance(row[k], (dict, list))})
            log_table(key="curve", columns=columns, data=[[row.get(c) for c in columns] for row in result.curve])
        if result.analyses:
            _log_analyses_wandb(logger, result, {k: v for k, v in scalars.items() if not _is_number(v)})
    logger.save()


def analysis_scalars(analyses: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of the analyses, as fractions like the final metrics. layer_curve: the best
    layer alone (its tap, depth and score), the last layer and the FNE of all layers, the whole
    embedding's transferability scores and each score's Kendall tau across the layers; few_shot: each
    method's mean at each number of shots ("analysis/few_shot/<method>/<label>")."""
    out: dict[str, Any] = {}
    curve = analyses.get("layer_curve")
    if curve:
        metric = curve.get("metric", "top1")
        rows = curve.get("rows", [])
        layers = sorted((r for r in rows if r.get("kind") == "layer"), key=lambda r: r["depth"])
        if layers:
            named = [r for r in layers if r.get("tap") == curve.get("best_tap")]
            best = named[0] if named else max(layers, key=lambda r: r["test"][metric])  # ties: the shallowest
            out["analysis/best_layer"] = str(best["tap"])
            out["analysis/best_layer_depth"] = int(best["depth"])
            out[f"analysis/best_layer_{metric}"] = float(best["test"][metric])
            last = next((r for r in layers if r.get("tap") == curve.get("last_tap")), layers[-1])
            out[f"analysis/last_layer_{metric}"] = float(last["test"][metric])
        full = next((r for r in rows if r.get("kind") == "full"), None)
        if full is not None:
            out[f"analysis/fne_{metric}"] = float(full["test"][metric])
            for name, value in (full.get("scores") or {}).items():
                if value is not None:  # None: undefined for these inputs
                    out[f"analysis/score/{name}"] = float(value)
        for c in curve.get("score_correlations", []):
            if c.get("kendall_tau") is not None:
                out[f"analysis/kendall_tau/{c['predictor']}"] = float(c["kendall_tau"])
    few_shot = analyses.get("few_shot")
    if few_shot:
        for point in few_shot.get("points", []):
            if point.get("mean") is not None:
                label = point.get("label") or ("all" if point.get("shots") is None else point["shots"])
                out[f"analysis/few_shot/{point['method']}/{label}"] = float(point["mean"])
    return out


def analysis_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of an analysis's W&B table: the rows flattened as in its CSV file. A wandb.Table
    refuses a column of numbers and text together: such a column is sent as text."""
    from tlbench.analysis.plots import flat_columns, flat_row

    flat = [flat_row(row) for row in rows]
    columns = flat_columns(flat)
    data = [[r.get(c) for c in columns] for r in flat]
    for j in range(len(columns)):
        kinds = {isinstance(row[j], str) for row in data if row[j] is not None}
        if len(kinds) == 2:
            for row in data:
                row[j] = None if row[j] is None else str(row[j])
    return columns, data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _log_analyses_wandb(logger: Logger, result: Result, texts: dict[str, str]) -> None:
    """Per analysis: its rows as a table and its figure (<run dir>/analysis/<name>.png, when written);
    for the layer curve a native line plot too; text scalars go to the run's summary."""
    import wandb

    from tlbench.analysis.plots import METRIC_LABELS

    experiment = logger.experiment
    for name, record in result.analyses.items():
        rows = record.get("rows") if name == "layer_curve" else record.get("points")
        if rows:
            columns, data = analysis_table(rows)
            logger.log_table(key=f"analysis/{name}", columns=columns, data=data)
        png = Path(result.run_dir) / "analysis" / f"{name}.png"
        if result.run_dir and png.is_file():
            logger.log_image(key=f"analysis/{name}_plot", images=[str(png)])
    curve = result.analyses.get("layer_curve")
    if curve and curve.get("score_correlations"):  # each score's Kendall tau across the layers, and its figure
        columns, data = analysis_table(curve["score_correlations"])
        logger.log_table(key="analysis/layer_scores", columns=columns, data=data)
        png = Path(result.run_dir) / "analysis" / "layer_scores.png"
        if result.run_dir and png.is_file():
            logger.log_image(key="analysis/layer_scores_plot", images=[str(png)])
    if curve:
        metric = curve.get("metric", "top1")
        y = METRIC_LABELS.get(metric, f"test {metric} (%)")  # the axis label of the PNG
        layers = sorted((r for r in curve.get("rows", []) if r.get("kind") == "layer"), key=lambda r: r["depth"])
        if layers:
            data = [[int(r["depth"]), 100 * float(r["test"][metric]), str(r["tap"])] for r in layers]
            table = wandb.Table(columns=["depth", y, "tap"], data=data)
            title = f"{curve.get('dataset', result.dataset)} · {curve.get('model', result.model)}: each layer alone"
            experiment.log({"analysis/layer_curve_line": wandb.plot.line(table, "depth", y, title=title)})
    for key, value in texts.items():
        experiment.summary[key] = value


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
