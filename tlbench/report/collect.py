"""Finding and reading results.json files; a corrupt one is skipped and named, never fatal."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.results import RESULTS_FILE

log = logging.getLogger(__name__)


@dataclass
class Collected:
    results: list[dict[str, Any]] = field(default_factory=list)  # each with "_path"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def find_result_files(paths: list[str | Path]) -> list[Path]:
    """results.json files at or below each path (a run dir, a multirun dir, a whole outputs/)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.rglob(RESULTS_FILE)))
        else:
            raise TlbenchError(f"{path} does not exist")
    return sorted(dict.fromkeys(p.resolve() for p in files))


def collect(paths: list[str | Path]) -> Collected:
    files = find_result_files(paths)
    if not files:
        raise TlbenchError(
            f"no {RESULTS_FILE} under {', '.join(map(str, paths))}: pass run directories, multirun "
            "directories or an outputs/ folder of finished runs"
        )
    out = Collected()
    for path in files:
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("metrics", {}).get("test"), dict):
                raise ValueError("no metrics.test")
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            out.skipped.append((str(path), f"unreadable ({exc})"))
            continue
        record["_path"] = str(path)
        out.results.append(record)
    return out


def method(result: dict[str, Any]) -> str:
    """The strategy, with last_layer named by its layer (fc6, fc7, penultimate): a paper's rows."""
    if result.get("strategy") == "last_layer":
        return str(result.get("config", {}).get("strategy", {}).get("layer", "last_layer"))
    return str(result.get("strategy"))


def field_value(result: dict[str, Any], key: str, missing: Any = None) -> Any:
    """A row/column key: `method`, a top-level field (dataset, model, strategy, seed) or a dotted
    path into the resolved config (classifier.C, dataset.split_id, ...); `missing` when the result
    has no such key (a key set to null gives None)."""
    if key == "method":
        return method(result)
    if key in result and not isinstance(result[key], dict):
        return result[key]
    node: Any = result.get("config") or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node
