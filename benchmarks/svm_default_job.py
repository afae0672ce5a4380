"""Linear-SVM fit on the default job's own FNE features: the torch backend against LinearSVC.

Target (issue: performance): on the int8 FNE inputs of the default job (digits, efficientnet_lite0,
1,257 x 19,200 train, 540 test, C = 1), `classifier.backend=torch` fits in at most 0.5x the time of
scikit-learn's LinearSVC with the same C (the sklearn backend as tlbench runs it), with test
accuracy within 0.5 points.

The default job runs once (a `tlbench` process, fresh cache) to make the features; the benchmark
then loads the cached int8 inputs and times both fits in this process, alternating, over several
rounds; the figure is the ratio of the median times. Prints a table, writes
benchmarks/results/svm_default_job.json, exits 1 when a target is missed.

    python benchmarks/svm_default_job.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tlbench.classifiers import LinearSVM
from tlbench.embedding.store import read_entry
from tlbench.metrics import classification_metrics


def fne_inputs(work: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    env = {**os.environ, "TLBENCH_OUTPUT_DIR": str(work / "outputs"), "TLBENCH_CACHE_DIR": str(work / "cache")}
    subprocess.run(
        [sys.executable, "-m", "tlbench.cli", f"hydra.run.dir={work / 'run'}", "trainer.enable_progress_bar=false"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    inputs = {}
    for link in (work / "cache").iterdir():
        if link.is_symlink():
            meta = json.loads((link / "meta.json").read_text())
            if meta.get("kind") == "prepared":
                entry = read_entry(link)
                inputs[meta["split"]] = (np.asarray(entry.features), entry.labels)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        inputs = fne_inputs(Path(tmp))
    (x, y), (x_test, y_test) = inputs["train"], inputs["test"]
    classes = int(y.max()) + 1
    times: dict[str, list[float]] = {"sklearn": [], "torch": []}
    accuracy: dict[str, float] = {}
    for _ in range(args.rounds):
        for backend in ("sklearn", "torch"):
            start = time.perf_counter()
            model = LinearSVM(C=1.0, backend=backend).fit(x, y)
            times[backend].append(time.perf_counter() - start)
            accuracy[backend] = classification_metrics(y_test, model.predict(x_test), classes)["top1"]
            converged = model.converged
            assert converged, f"{backend} did not converge"
    ratio = statistics.median(times["torch"]) / statistics.median(times["sklearn"])
    gap = 100 * abs(accuracy["torch"] - accuracy["sklearn"])
    report = {
        "benchmark": "svm_default_job",
        "train_shape": list(x.shape),
        "dtype": str(x.dtype),
        "sklearn_s": [round(t, 3) for t in times["sklearn"]],
        "torch_s": [round(t, 3) for t in times["torch"]],
        "ratio": round(ratio, 3),
        "accuracy": accuracy,
        "accuracy_gap_points": round(gap, 3),
        "targets": {"ratio": 0.5, "accuracy_gap_points": 0.5},
        "machine": {
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{'figure':<40}{'value':>10}{'target':>10}")
    print(f"{'LinearSVC fit (s, median)':<40}{statistics.median(times['sklearn']):>10.2f}")
    print(f"{'torch fit (s, median)':<40}{statistics.median(times['torch']):>10.2f}")
    print(f"{'torch / LinearSVC':<40}{ratio:>10.3f}{'<= 0.5':>10}")
    print(f"{'test top-1 LinearSVC / torch':<40}{accuracy['sklearn']:>10.4f}{accuracy['torch']:>10.4f}")
    print(f"{'accuracy gap (points)':<40}{gap:>10.2f}{'<= 0.5':>10}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "svm_default_job.json").write_text(json.dumps(report, indent=2))
    sys.exit(0 if ratio <= 0.5 and gap <= 0.5 else 1)


if __name__ == "__main__":
    main()
