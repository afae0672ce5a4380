"""Is method A better than method B? Two comparisons, both paired:

- two runs on the same test images (tlbench-report compare RUN_A RUN_B): the metric's difference with
  a paired bootstrap interval over the test images, and McNemar's exact test on the images only one
  of them gets right (tlbench.stats). This is the uncertainty of the test set alone, not of training.
- two rows of the report table (tlbench-report PATHS --compare ROW_A ROW_B): per column, the runs
  paired by seed and split, a paired t test and a Wilcoxon signed-rank test on the per-run metrics,
  and, where each pair has per-image predictions of the same test images, McNemar and the paired
  bootstrap on the first pair.

Per-image predictions come from predictions.npz in the run directory (tlbench.predictions);
extraction runs write it, fine-tuning runs do not (yet)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlbench import stats
from tlbench.errors import TlbenchError
from tlbench.predictions import SplitPredictions, read_predictions
from tlbench.report.collect import method
from tlbench.report.settings import ABSENT, canonical, flatten, is_seed_or_split, layout_config_keys, show
from tlbench.report.table import ReportTable, metric_name, metric_of
from tlbench.results import RESULTS_FILE

CONFIDENCE = 0.95
# Dataset settings that do not choose the test images: where they are read from, how they are
# loaded, and the training side (few-shot draws, validation holdout).
NOT_TEST_SPLIT_KEYS = (
    "root",
    "batch_size",
    "num_workers",
    "val_fraction",
    "val_seed",
    "train_per_class",
    "few_shot_seed",
    "_target_",
    "_partial_",
)


# ---------------------------------------------------------------- two runs


def load_run(path: str | Path) -> dict[str, Any]:
    """results.json of a run directory (or the file itself), with "_path" as tlbench.report.collect."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise TlbenchError(f"{file} does not exist: give a run directory (holding {RESULTS_FILE}) or the file")
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise TlbenchError(f"{file} is unreadable ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("metrics", {}).get("test"), dict):
        raise TlbenchError(f"{file} has no metrics.test: not a finished tlbench run")
    record["_path"] = str(file)
    return record


def load_test_predictions(result: dict[str, Any]) -> SplitPredictions:
    """The test split of predictions.npz beside the run's results.json."""
    run_dir = Path(result["_path"]).parent
    try:
        splits = read_predictions(run_dir)
    except TlbenchError as exc:
        raise TlbenchError(
            f"run {run_dir} has no per-image predictions, which McNemar and the paired bootstrap need ({exc}); "
            "fine-tuning runs do not write predictions.npz yet"
        ) from exc
    except (OSError, ValueError, KeyError) as exc:  # a truncated or foreign .npz
        raise TlbenchError(f"{run_dir / 'predictions.npz'} is unreadable ({exc})") from exc
    if "test" not in splits:
        raise TlbenchError(f"{run_dir / 'predictions.npz'} has no test split (it has {', '.join(splits) or 'none'})")
    return splits["test"]


def _test_split_settings(result: dict[str, Any]) -> dict[str, Any]:
    dataset = (result.get("config") or {}).get("dataset") or {}
    flat = flatten(dataset) if isinstance(dataset, dict) else {}
    return {k: canonical(v) for k, v in flat.items() if k.split(".")[0] not in NOT_TEST_SPLIT_KEYS}


def different_test_images(
    result_a: dict[str, Any], pred_a: SplitPredictions, result_b: dict[str, Any], pred_b: SplitPredictions
) -> str | None:
    """Why the two runs were not evaluated on the same test images, or None when they were: the same
    dataset and split settings (split_id, split_seed, ...), and the same image indices and labels."""
    if result_a.get("dataset") != result_b.get("dataset"):
        return f"datasets differ ({result_a.get('dataset')} vs {result_b.get('dataset')})"
    settings_a, settings_b = _test_split_settings(result_a), _test_split_settings(result_b)
    for key in sorted(set(settings_a) & set(settings_b)):  # a key one config lacks: an older run, not a clash
        if settings_a[key] != settings_b[key]:
            return f"dataset.{key} differs ({show(settings_a[key])} vs {show(settings_b[key])})"
    if len(pred_a.indices) != len(pred_b.indices):
        return f"numbers of test images differ ({len(pred_a.indices)} vs {len(pred_b.indices)})"
    for what, x, y in (("indices", pred_a.indices, pred_b.indices), ("labels", pred_a.labels, pred_b.labels)):
        unequal = np.flatnonzero(np.asarray(x) != np.asarray(y))
        if unequal.size:
            i = int(unequal[0])
            return f"test image {what} differ at {unequal.size} of {len(x)} rows (first at row {i}: {x[i]} vs {y[i]})"
    return None


def _num_classes(results: list[dict[str, Any]], preds: list[SplitPredictions]) -> int:
    """The runs' class count; at least one more than the largest label or prediction seen."""
    declared = [int(r["num_classes"]) for r in results if isinstance(r.get("num_classes"), int)]
    seen = [int(max(p.labels.max(initial=0), p.predictions.max(initial=0))) + 1 for p in preds]
    return max(declared + seen)


def run_label(result: dict[str, Any]) -> str:
    seed = result.get("seed", (result.get("config") or {}).get("seed"))
    return f"{method(result)} · {result.get('model')} · {result.get('dataset')} · seed {seed}"


@dataclass
class RunComparison:
    """Two runs on the same test images (fractions, not percent)."""

    path_a: str
    path_b: str
    label_a: str
    label_b: str
    metric: str  # top1 or mean_per_class
    value_a: float  # from predictions.npz
    value_b: float
    n_images: int
    bootstrap: dict[str, Any]  # tlbench.stats.paired_bootstrap
    mcnemar: dict[str, Any]  # tlbench.stats.mcnemar_exact
    warnings: list[str] = field(default_factory=list)

    def reading(self) -> str:
        low, high = self.bootstrap["low"], self.bootstrap["high"]
        p = self.mcnemar["p_value"]
        level = f"{100 * CONFIDENCE:g}%"
        if low > 0 or high < 0:
            better = "A" if low > 0 else "B"
            text = (
                f"{better} is better on these test images: the {level} interval of A - B excludes 0; "
                f"McNemar p = {_p(p)}"
            )
        else:
            text = f"no clear difference on these test images: the {level} interval of A - B includes 0; "
            text += f"McNemar p = {_p(p)}"
        return text + " (test-image variability only, not seed or split variability)"

    def text(self) -> str:
        b = self.bootstrap
        m = self.mcnemar
        lines = [
            f"A: {self.label_a}  ({self.path_a})",
            f"B: {self.label_b}  ({self.path_b})",
            f"test {self.metric} on the same {self.n_images} images: A {100 * self.value_a:.2f}%, "
            f"B {100 * self.value_b:.2f}%",
            f"A - B: {_points(b['difference'])} points, {100 * CONFIDENCE:g}% interval "
            f"[{_points(b['low'])}, {_points(b['high'])}] ({b['method']})",
            f"McNemar exact p = {_p(m['p_value'])}: {m['a_only']} images right only for A, {m['b_only']} right "
            "only for B (on top-1 correctness, whatever the metric)",
            f"reading: {self.reading()}",
        ]
        return "\n".join(lines)


def compare_runs(
    result_a: dict[str, Any], result_b: dict[str, Any], metric: str = "headline", resamples: int = 10000, seed: int = 0
) -> RunComparison:
    """The metric (headline: A's own) of two runs, paired bootstrap and McNemar on their test images."""
    pred_a, pred_b = load_test_predictions(result_a), load_test_predictions(result_b)
    why = different_test_images(result_a, pred_a, result_b, pred_b)
    if why:
        raise TlbenchError(
            f"{result_a['_path']} and {result_b['_path']} were not evaluated on the same test images: {why}. "
            "A paired comparison needs both methods on the same images (same dataset, split and images)"
        )
    name = metric_name(result_a, metric)
    if metric == "headline" and metric_name(result_b, metric) != name:
        raise TlbenchError(
            f"the runs' headline metrics differ ({name} vs {metric_name(result_b, metric)}): pass --metric top1 "
            "or --metric mean_per_class"
        )
    num_classes = _num_classes([result_a, result_b], [pred_a, pred_b])
    labels = pred_a.labels
    try:
        value_a = stats.metric_value(labels, pred_a.predictions, name, num_classes)
        value_b = stats.metric_value(labels, pred_b.predictions, name, num_classes)
        bootstrap = stats.paired_bootstrap(
            labels, pred_a.predictions, pred_b.predictions, name, num_classes, CONFIDENCE, resamples, seed
        )
        mcnemar = stats.mcnemar_exact(labels, pred_a.predictions, pred_b.predictions)
    except ValueError as exc:
        raise TlbenchError(f"{result_a['_path']} vs {result_b['_path']}: {exc}") from exc
    warnings = []
    for result, value in ((result_a, value_a), (result_b, value_b)):
        recorded = result["metrics"]["test"].get(name)
        if isinstance(recorded, (int, float)) and abs(recorded - value) > 5e-4:
            warnings.append(
                f"{result['_path']} records test {name} {100 * recorded:.2f}% but its predictions.npz gives "
                f"{100 * value:.2f}%: the file may belong to another run"
            )
    return RunComparison(
        result_a["_path"],
        result_b["_path"],
        run_label(result_a),
        run_label(result_b),
        name,
        value_a,
        value_b,
        len(labels),
        bootstrap,
        mcnemar,
        warnings,
    )


# ---------------------------------------------------------------- two rows of the table


def pairing_key(result: dict[str, Any], keys: list[str]) -> tuple:
    """The run's values of the seed/split keys that pair it with a run of the other row."""
    flat = flatten(result.get("config") or {})
    if "seed" not in flat and "seed" in result:
        flat["seed"] = result["seed"]
    return tuple(canonical(flat.get(k, ABSENT)) for k in keys)


def _seed_keys(result: dict[str, Any], excluded: list[str]) -> set[str]:
    flat = set(flatten(result.get("config") or {}))
    if "seed" in result:
        flat.add("seed")
    return {k for k in flat if is_seed_or_split(k) and not any(k == e or k.startswith(e + ".") for e in excluded)}


def describe_key(keys: list[str], key: tuple) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in zip(keys, key)) or "the only run"


@dataclass
class ColumnComparison:
    column: str
    pairs: list[tuple[str, str, str]] = field(default_factory=list)  # (pairing, path A, path B)
    t: dict[str, Any] | None = None  # tlbench.stats.paired_test
    wilcoxon: dict[str, Any] | None = None
    mcnemar: dict[str, Any] | None = None
    bootstrap: dict[str, Any] | None = None
    bootstrap_pair: str = ""  # the pair McNemar and the bootstrap are on
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.pairs)


@dataclass
class RowComparison:
    row_a: str
    row_b: str
    metric: str
    column_key: str
    columns: list[ColumnComparison]

    def markdown(self) -> str:
        header = (
            f"| {self.column_key} | pairs | A - B | t {100 * CONFIDENCE:g}% interval | t p | d_z | Wilcoxon p | "
            f"r | McNemar p (A only / B only) | bootstrap {100 * CONFIDENCE:g}% interval | notes |"
        )
        lines = [header, "|---" * 11 + "|"]
        for c in self.columns:
            t, w, m, b = c.t or {}, c.wilcoxon or {}, c.mcnemar, c.bootstrap
            cells = [
                c.column,
                str(c.n),
                _points(t.get("mean_difference")),
                _interval(t.get("low"), t.get("high")),
                _p(t.get("p_value")),
                _num(t.get("effect_size")),
                _p(w.get("p_value")),
                _num(w.get("effect_size")),
                f"{_p(m['p_value'])} ({m['a_only']} / {m['b_only']})" if m else "",
                _interval(b["low"], b["high"]) if b else "",
                "; ".join(c.notes),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def title(self) -> str:
        metric = "each dataset's headline metric" if self.metric == "headline" else self.metric
        return (
            f"A = {self.row_a}, B = {self.row_b}: A - B of test {metric}, percentage points; runs paired by "
            f"seed/split per {self.column_key}; paired t (interval, p, Cohen's d_z) and Wilcoxon signed-rank "
            "(p, rank-biserial r) over the pairs; McNemar exact and paired bootstrap over the test images of "
            "one pair, where the runs have predictions.npz:"
        )

    def csv(self) -> str:
        """One line per column, values as fractions (not percent); empty where not computed."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "row_a",
                "row_b",
                self.column_key,
                "metric",
                "pairs",
                "mean_difference",
                "t_low",
                "t_high",
                "t_statistic",
                "t_p",
                "cohens_dz",
                "wilcoxon_statistic",
                "wilcoxon_p",
                "rank_biserial",
                "mcnemar_a_only",
                "mcnemar_b_only",
                "mcnemar_p",
                "bootstrap_pair",
                "bootstrap_difference",
                "bootstrap_low",
                "bootstrap_high",
                "bootstrap_resamples",
                "notes",
            ]
        )
        for c in self.columns:
            t, w, m, b = c.t or {}, c.wilcoxon or {}, c.mcnemar or {}, c.bootstrap or {}
            writer.writerow(
                [
                    self.row_a,
                    self.row_b,
                    c.column,
                    self.metric,
                    c.n,
                    *(
                        _csv(x)
                        for x in (
                            t.get("mean_difference"),
                            t.get("low"),
                            t.get("high"),
                            t.get("statistic"),
                            t.get("p_value"),
                            t.get("effect_size"),
                            w.get("statistic"),
                            w.get("p_value"),
                            w.get("effect_size"),
                            m.get("a_only"),
                            m.get("b_only"),
                            m.get("p_value"),
                        )
                    ),
                    c.bootstrap_pair,
                    *(_csv(b.get(k)) for k in ("difference", "low", "high", "resamples")),
                    "; ".join(c.notes),
                ]
            )
        return buffer.getvalue()


def resolve_row(table: ReportTable, name: str) -> str:
    """A row label of the table: the exact label, or a --rows value that names a single row."""
    if name in table.rows:
        return name
    matches = [r for r in table.rows if table.row_base.get(r) == name]
    if len(matches) == 1:
        return matches[0]
    rows = ", ".join(repr(r) for r in table.rows)
    if matches:
        raise TlbenchError(f"--compare {name!r} names several rows ({', '.join(map(repr, matches))}): give one")
    raise TlbenchError(f"--compare: no row {name!r} in the table (--rows {table.row_key}); its rows are: {rows}")


def compare_rows(table: ReportTable, row_a: str, row_b: str, resamples: int = 10000, seed: int = 0) -> RowComparison:
    """Per column, the runs of rows A and B paired by their seed/split settings (those every run of the
    two cells has, besides the --rows/--cols keys): paired t and Wilcoxon over the pairs, and McNemar
    and a paired bootstrap on the first pair when every pair has predictions on the same test images."""
    row_a, row_b = resolve_row(table, row_a), resolve_row(table, row_b)
    if row_a == row_b:
        raise TlbenchError(f"--compare needs two different rows, got {row_a!r} twice")
    # The --rows/--cols keys as config paths (dataset -> dataset.name): never a pairing key, even --rows seed.
    excluded = [*layout_config_keys(table.row_key), *layout_config_keys(table.column_key)]
    out = []
    for column in table.columns:
        cell_a, cell_b = table.cells.get((row_a, column)), table.cells.get((row_b, column))
        if cell_a is None or cell_b is None:
            continue
        out.append(_compare_column(table.metric, column, cell_a.results, cell_b.results, excluded, resamples, seed))
    if not out:
        raise TlbenchError(f"rows {row_a!r} and {row_b!r} share no {table.column_key}: nothing to compare")
    return RowComparison(row_a, row_b, table.metric, table.column_key, out)


def _compare_column(
    metric: str,
    column: str,
    runs_a: list[dict[str, Any]],
    runs_b: list[dict[str, Any]],
    excluded: list[str],
    resamples: int,
    seed: int,
) -> ColumnComparison:
    result = ColumnComparison(column)
    keys = sorted(set.intersection(*(_seed_keys(r, excluded) for r in runs_a + runs_b)))
    by_key: list[dict[tuple, dict[str, Any]]] = []
    for side, runs in (("A", runs_a), ("B", runs_b)):
        found: dict[tuple, list[dict[str, Any]]] = {}
        for run in runs:
            found.setdefault(pairing_key(run, keys), []).append(run)
        for key, same in found.items():
            if len(same) > 1:
                result.notes.append(f"{len(same)} runs of {side} with {describe_key(keys, key)}: not paired")
        by_key.append({k: v[0] for k, v in found.items() if len(v) == 1})
    common = sorted(set(by_key[0]) & set(by_key[1]), key=_sortable)
    for side, own in (("A", by_key[0]), ("B", by_key[1])):
        alone = sorted(set(own) - set(by_key[1 if side == "A" else 0]), key=_sortable)
        if alone:
            result.notes.append(
                f"{len(alone)} run(s) of {side} without a partner ({'; '.join(describe_key(keys, k) for k in alone)})"
            )
    pairs = [(by_key[0][k], by_key[1][k]) for k in common]
    result.pairs = [(describe_key(keys, k), a["_path"], b["_path"]) for k, (a, b) in zip(common, pairs)]
    if not pairs:
        return result
    values_a = [metric_of(a, metric) for a, _ in pairs]
    values_b = [metric_of(b, metric) for _, b in pairs]
    result.t = stats.paired_test(values_a, values_b, "t", CONFIDENCE)
    if len(pairs) >= 2:
        result.wilcoxon = stats.paired_test(values_a, values_b, "wilcoxon", CONFIDENCE)
    else:
        result.notes.append("one pair: no t or Wilcoxon test")
    names = {metric_name(r, metric) for pair in pairs for r in pair}
    _on_test_images(result, pairs, names, resamples, seed)
    return result


def _on_test_images(
    result: ColumnComparison,
    pairs: list[tuple[dict[str, Any], dict[str, Any]]],
    names: set[str],
    resamples: int,
    seed: int,
) -> None:
    """McNemar and the paired bootstrap on the first pair, if every pair has predictions of the same
    test images (otherwise a note saying why not)."""
    if len(names) > 1:
        result.notes.append(f"no McNemar/bootstrap: the runs' headline metrics differ ({', '.join(sorted(names))})")
        return
    missing = [r["_path"] for pair in pairs for r in pair if not _has_predictions(r)]
    if missing:
        result.notes.append(
            f"no McNemar/bootstrap: {len(missing)} of {2 * len(pairs)} runs have no predictions.npz "
            "(fine-tuning runs write none)"
        )
        return
    loaded = []
    for (pairing, _, _), (a, b) in zip(result.pairs, pairs):
        try:
            pa, pb = load_test_predictions(a), load_test_predictions(b)
        except TlbenchError as exc:
            result.notes.append(f"no McNemar/bootstrap: the pair {pairing}: {exc}")
            return
        why = different_test_images(a, pa, b, pb)
        if why:
            result.notes.append(f"no McNemar/bootstrap: the pair {pairing} has different test images ({why})")
            return
        loaded.append((a, b, pa, pb))
    a, b, pa, pb = loaded[0]
    name = names.pop()
    num_classes = _num_classes([a, b], [pa, pb])
    result.mcnemar = stats.mcnemar_exact(pa.labels, pa.predictions, pb.predictions)
    result.bootstrap = stats.paired_bootstrap(
        pa.labels, pa.predictions, pb.predictions, name, num_classes, CONFIDENCE, resamples, seed
    )
    result.bootstrap_pair = result.pairs[0][0]
    if len(pairs) > 1:
        result.notes.append(f"McNemar/bootstrap on the pair {result.bootstrap_pair} ({len(pa.labels)} test images)")


def _has_predictions(result: dict[str, Any]) -> bool:
    return (Path(result["_path"]).parent / "predictions.npz").is_file()


def _sortable(key: tuple) -> tuple:
    """Pairing keys in natural order (seed 2 before seed 10), whatever their value types."""
    return tuple((0, v, "") if isinstance(v, float) else (1, 0.0, show(v)) for v in key)


# ---------------------------------------------------------------- formatting


def _points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def _interval(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{_points(low)}, {_points(high)}]"


def _p(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2g}" if value < 1e-3 else f"{value:.3f}"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _csv(value: Any) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.6g}"
