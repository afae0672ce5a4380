"""The `logger` config group turned into a Lightning logger, and a finished Result written to it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
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
    the per-epoch curve; the flattened config too unless the logger already has it."""
    if not config_logged:
        logger.log_hyperparams(flatten(result.config))
    values: dict[str, Any] = {f"{split}/{k}": v for split, m in result.metrics.items() for k, v in m.items()}
    values.update({f"time/{k}": v for k, v in result.timings.items()})
    values["feature_dim"] = result.feature_dim
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
    logger.save()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
