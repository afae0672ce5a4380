"""Which settings of a run may be averaged over in one report cell: only seeds and splits. Each
result's resolved config is flattened to dotted keys with comparable values (1 == 1.0, lists and
dicts compared structurally); the keys below are left out, and any other key on which the runs of a
cell disagree splits the cell."""

from __future__ import annotations

import math
from typing import Any

# Seeds and splits: the repetitions a cell's mean ± std is over. Any other key named `seed` or
# ending in `_seed` (dataset.split_seed, dataset.fold_seed) counts too, see is_seed_or_split.
SEED_AND_SPLIT_KEYS = (
    "seed",
    "dataset.split_id",
    "dataset.few_shot_seed",
    "dataset.val_seed",
    "classifier.random_state",
)

# Settings that do not change a run's numbers: where files are read and written, logging and
# progress display, loader worker processes, resumption bookkeeping, and the paper numbers a preset
# carries (compared, not produced). A key listed here covers everything below it (paths.cache_dir).
IRRELEVANT_KEYS = (
    "paths",
    "hydra",
    "logger",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "dataset.num_workers",
    "dataset.root",
    "data_root",
    "cache",
    "overwrite",
    "slurm",
    "paper",
    "run_dir",
)

# Batch size and process count: extraction runs the backbone in eval mode, so an image's features
# do not depend on its batch or on how many processes share the images; fine-tuning trains with a
# global batch of batch_size x devices x nodes (batch_size is per process), which changes the
# numbers. So these are left out for every strategy except finetune.
EXTRACTION_ONLY_IRRELEVANT_KEYS = ("dataset.batch_size", "trainer.devices", "trainer.num_nodes")
TRAINING_STRATEGIES = ("finetune",)

ABSENT = ("absent",)  # a key a run's config does not have (distinct from null)


def canonical(value: Any) -> Any:
    """A hashable form in which equal settings are equal: numbers as floats (1 == 1.0), bools kept
    apart from numbers (True != 1), lists and dicts as tagged tuples (structural comparison)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("nan",) if isinstance(value, float) and math.isnan(value) else float(value)
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), canonical(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(canonical(v) for v in value))
    return value  # str, None


def show(value: Any) -> str:
    """A canonical value as a short text for row labels: 20.0 -> 20, None -> null."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, tuple):
        if value[0] == "bool":
            return "true" if value[1] else "false"
        if value[0] == "nan":
            return "nan"
        if value[0] == "list":
            return "[" + ", ".join(show(v) for v in value[1]) + "]"
        if value[0] == "dict":
            return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value[1]) + "}"
    return str(value)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"dataset": {"name": "dtd"}} -> {"dataset.name": "dtd"}; lists and empty dicts are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def is_seed_or_split(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return key in SEED_AND_SPLIT_KEYS or name == "seed" or name.endswith("_seed")


def _under(key: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def layout_config_keys(key: str) -> list[str]:
    """The config keys a --rows/--cols key stands for: `dataset` is dataset.name, `method` the
    strategy and its layer, a dotted path itself."""
    if key == "method":
        return ["strategy.name", "strategy.layer"]
    if key in ("dataset", "model", "strategy"):
        return [f"{key}.name"]
    return [key]


def compared_settings(result: dict[str, Any], layout_keys: list[str]) -> dict[str, Any]:
    """The canonical settings of a run that must agree within a cell: its flattened config without
    seeds and splits, irrelevant keys and the row/column keys (`layout_keys`)."""
    config = result.get("config") or {}
    strategy = (config.get("strategy") or {}).get("name", result.get("strategy"))
    ignored = list(IRRELEVANT_KEYS)
    if strategy not in TRAINING_STRATEGIES:
        ignored += EXTRACTION_ONLY_IRRELEVANT_KEYS
    for key in layout_keys:
        ignored += layout_config_keys(key)
    return {
        key: canonical(value)
        for key, value in flatten(config).items()
        if not is_seed_or_split(key) and not _under(key, ignored)
    }


def differing_keys(settings: list[dict[str, Any]]) -> set[str]:
    """Keys on which these runs' settings disagree (present in some and absent in others counts)."""
    keys = set().union(*settings) if settings else set()
    return {k for k in keys if len({s.get(k, ABSENT) for s in settings}) > 1}
