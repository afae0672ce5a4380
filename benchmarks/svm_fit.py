"""Linear-SVM fits: tlbench's torch backend against scikit-learn's LinearSVC (same objective, same C),
and C=auto against the sequential sklearn fits it replaces, each measured in this one process.

Figures (issue: performance):
- fit on synthetic ternary {-1, 0, 1} int8 features, N x D, K classes (default 10,000 x 12,416, 100
  classes, as an FNE matrix): time ratio torch / sklearn (target <= 0.5; <= 0.05 on a GPU) and test
  accuracy within 0.5 points;
- C=auto with F folds x G grid values: tlbench's selection (torch, warm starts) against F x G
  sequential LinearSVC fits (target <= 0.2).

The synthetic problem: each class has a random ternary prototype; an image is its prototype with a
fraction of entries replaced by random ternary values, so the classes overlap and accuracy is
neither 0 nor 1. Smaller sizes for a quick look: --n 3000 --d 4096 --classes 30.

    python benchmarks/svm_fit.py [--n 10000] [--d 12416] [--classes 100] [--C 0.01] [--folds 5] [--grid 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tlbench.classifiers import LinearSVM

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=12_416)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--noise", type=float, default=0.85)
    p.add_argument("--C", type=float, default=0.01)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--grid", type=int, default=7)
    p.add_argument("--auto-n", type=int, default=2000, help="training images for the C=auto comparison")
    args = p.parse_args()

    x, y = ternary_problem(args.n + args.n // 4, args.d, args.classes, args.noise, seed=0)
    train, test = slice(0, args.n), slice(args.n, None)
    rows = {}

    t_sk, sk = timed(lambda: LinearSVM(C=args.C, backend="sklearn").fit(x[train].astype(np.float32), y[train]))
    t_to, to = timed(lambda: LinearSVM(C=args.C, backend="torch").fit(x[train], y[train]))
    acc_sk = float((sk.predict(x[test].astype(np.float32)) == y[test]).mean())
    acc_to = float((to.predict(x[test]) == y[test]).mean())
    rows["fit"] = {
        "sklearn_s": round(t_sk, 2),
        "torch_s": round(t_to, 2),
        "ratio": round(t_to / t_sk, 3),
        "sklearn_acc": acc_sk,
        "torch_acc": acc_to,
        "target": 0.05 if torch.cuda.is_available() else 0.5,
    }
    rows["fit"]["met"] = rows["fit"]["ratio"] <= rows["fit"]["target"] and abs(acc_sk - acc_to) <= 0.005

    grid = list(np.logspace(-4, 2, args.grid))
    xa, ya = x[: args.auto_n], y[: args.auto_n]

    def sequential() -> None:
        folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
        for tr, _ in folds.split(xa, ya):
            for c in grid:
                LinearSVC(C=c).fit(xa[tr].astype(np.float32), ya[tr])

    t_seq, _ = timed(sequential)
    t_auto, auto = timed(lambda: LinearSVM(C="auto", backend="torch", c_grid=grid, cv_folds=args.folds).fit(xa, ya))
    rows["C_auto"] = {
        "sequential_sklearn_s": round(t_seq, 2),
        "tlbench_auto_s": round(t_auto, 2),
        "ratio": round(t_auto / t_seq, 3),
        "chosen_C": auto.chosen_C,
        "target": 0.2,
    }
    rows["C_auto"]["met"] = rows["C_auto"]["ratio"] <= 0.2

    record = {
        "args": vars(args),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}",
        "results": rows,
    }
    print(json.dumps(record, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "svm_fit.json").write_text(json.dumps(record, indent=2))
    return 0 if all(r["met"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
