"""Linear-SVM fits: tlbench's torch backend against scikit-learn's LinearSVC (same objective, same C),
and C=auto against the sequential sklearn fits it replaces, each measured in this one process.

Figures (issue: performance):
- fit on synthetic ternary {-1, 0, 1} int8 features, N x D, K classes (default 10,000 x 12,416, 100
  classes, as an FNE matrix): time ratio torch / sklearn (target <= 0.5; <= 0.05 on a GPU) and test
  accuracy within 0.5 points;
- C=auto with F folds x G grid values on the first --auto-n training images: tlbench's selection
  (torch backend: the whole grid and the refit in kernel space when N <= D, see
  tlbench/classifiers/kernel_newton.py) against F x G sequential LinearSVC fits on the same folds
  and grid (target <= 0.2); the C each one picks is reported.

Both sides use the defaults of the configuration (tol 1e-4, max_iter 1000; LinearSVC dual="auto").
A table goes to stdout, the record to benchmarks/results/svm_fit.json; the exit status is 1 when a
target is missed.

The synthetic problem: each class has a random ternary prototype; an image is its prototype with a
fraction of entries replaced by random ternary values, so the classes overlap and accuracy is
neither 0 nor 1 (noise 0.92: about 70 % at 3,000 x 12,416, 100 classes; 0.85 makes it separable).
Smaller sizes for a quick look: --n 2000 --d 2048 --classes 20 --auto-n 1000.

    python benchmarks/svm_fit.py [--n 10000] [--d 12416] [--classes 100] [--C 0.01] [--folds 5] [--grid 7]
        [--auto-n 2000] [--skip-fit] [--skip-auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tlbench.classifiers import LinearSVM
from tlbench.metrics import classification_metrics

RESULTS = Path(__file__).resolve().parent / "results"


def ternary_problem(n: int, d: int, classes: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.array([-1, 0, 1], dtype=np.int8)
    prototypes = rng.choice(values, size=(classes, d))
    labels = rng.integers(0, classes, n)
    x = prototypes[labels]
    replace = rng.random((n, d)) < noise
    x[replace] = rng.choice(values, size=int(replace.sum()))
    return x, labels


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def single_fit(x: np.ndarray, y: np.ndarray, n: int, C: float) -> dict:
    """torch against LinearSVC with the same C on the first n rows; accuracy on the rest."""
    train, test = slice(0, n), slice(n, None)
    t_sk, sk = timed(lambda: LinearSVM(C=C, backend="sklearn").fit(x[train].astype(np.float32), y[train]))
    t_to, to = timed(lambda: LinearSVM(C=C, backend="torch").fit(x[train], y[train]))
    acc_sk = float((sk.predict(x[test].astype(np.float32)) == y[test]).mean())
    acc_to = float((to.predict(x[test]) == y[test]).mean())
    row = {
        "sklearn_s": round(t_sk, 2),
        "torch_s": round(t_to, 2),
        "ratio": round(t_to / t_sk, 3),
        "sklearn_acc": acc_sk,
        "torch_acc": acc_to,
        "acc_diff_points": round(100 * (acc_to - acc_sk), 2),
        "sklearn_converged": sk.converged,
        "torch_converged": to.converged,
        "torch_evaluations": to.describe()["evaluations"],
        "target": 0.05 if torch.cuda.is_available() else 0.5,
    }
    row["met"] = row["ratio"] <= row["target"] and abs(acc_sk - acc_to) <= 0.005
    return row


def c_auto(x: np.ndarray, y: np.ndarray, folds: int, grid: list[float]) -> dict:
    """tlbench's C=auto against len(grid) x folds sequential LinearSVC fits on the same folds."""
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(x, y))
    num_classes = int(y.max()) + 1

    def sequential() -> tuple[list[float], int]:
        means, unconverged = [], 0
        for c in grid:
            scores = []
            for tr, held in splits:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    svc = LinearSVC(C=c).fit(x[tr].astype(np.float32), y[tr])
                unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
                scores.append(
                    classification_metrics(y[held], svc.predict(x[held].astype(np.float32)), num_classes)["top1"]
                )
            means.append(float(np.mean(scores)))
        return means, unconverged

    t_seq, (seq_means, unconverged) = timed(sequential)
    t_auto, auto = timed(lambda: LinearSVM(C="auto", backend="torch", c_grid=grid, cv_folds=folds).fit(x, y))
    record = auto.describe()
    selection = record["C_selection"]
    row = {
        "fits": folds * len(grid),
        "sequential_sklearn_s": round(t_seq, 2),
        "tlbench_auto_s": round(t_auto, 2),
        "ratio": round(t_auto / t_seq, 3),
        "sklearn_unconverged_fits": unconverged,
        "sklearn_means": [round(m, 4) for m in seq_means],
        "tlbench_means": [round(r["mean"], 4) for r in selection["grid"]],
        "sklearn_chosen_C": grid[int(np.argmax(seq_means))],
        "tlbench_chosen_C": auto.chosen_C,
        "solver": selection["solver"],
        "solver_converged": selection.get("converged"),
        "target": 0.2,
    }
    row["met"] = row["ratio"] <= row["target"]
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=12_416)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.92, help="fraction of entries replaced (0.92: ~70 %% accuracy)")
    p.add_argument("--C", type=float, default=0.01)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--grid", type=int, default=7, help="values of np.logspace(-4, 2, grid)")
    p.add_argument("--auto-n", type=int, default=2000, help="training images for the C=auto comparison")
    p.add_argument("--skip-fit", action="store_true", help="only the C=auto comparison")
    p.add_argument("--skip-auto", action="store_true", help="only the single fit")
    p.add_argument("--out", default="svm_fit.json", help="file name under benchmarks/results/")
    args = p.parse_args()

    load_before = os.getloadavg()[0]
    x, y = ternary_problem(args.n + args.n // 4, args.d, args.classes, args.noise, seed=0)
    rows = {}
    if not args.skip_fit:
        rows["fit"] = single_fit(x, y, args.n, args.C)
    if not args.skip_auto:
        grid = [float(c) for c in np.logspace(-4, 2, args.grid)]
        smallest = int(np.bincount(y[: args.auto_n]).min())
        if smallest < args.folds:  # tlbench would use fewer folds than the sequential baseline
            p.error(f"--auto-n {args.auto_n}: the smallest class has {smallest} images, fewer than --folds")
        rows["C_auto"] = c_auto(x[: args.auto_n], y[: args.auto_n], args.folds, grid)

    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
    )
    # another process competing for the cores slows torch's threads far more than liblinear's one
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    record = {"args": vars(args), "machine": machine, "load_average_1min": load, "results": rows}
    print(f"{machine}; load average {load['before']} -> {load['after']}")
    print(f"n={args.n} d={args.d} classes={args.classes} C={args.C} noise={args.noise} auto-n={args.auto_n}")
    print(f"{'comparison':<10} {'sklearn s':>10} {'tlbench s':>10} {'ratio':>7} {'target':>7} {'met':>5}  notes")
    if "fit" in rows:
        r = rows["fit"]
        notes = (
            f"accuracy sklearn {r['sklearn_acc']:.4f} torch {r['torch_acc']:.4f} ({r['acc_diff_points']:+.2f} points)"
        )
        times = f"{r['sklearn_s']:>10} {r['torch_s']:>10} {r['ratio']:>7}"
        print(f"{'fit':<10} {times} {r['target']:>7} {r['met']!s:>5}  {notes}")
    if "C_auto" in rows:
        r = rows["C_auto"]
        notes = f"{r['fits']} fits; chosen C sklearn {r['sklearn_chosen_C']:g} tlbench {r['tlbench_chosen_C']:g}"
        print(
            f"{'C=auto':<10} {r['sequential_sklearn_s']:>10} {r['tlbench_auto_s']:>10} {r['ratio']:>7} "
            f"{r['target']:>7} {r['met']!s:>5}  {notes}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(record, indent=2))
    return 0 if all(r["met"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
