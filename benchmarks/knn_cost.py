"""What the k-NN probe (classifier=knn, tlbench/classifiers/knn.py; DINO eval_knn.py knn_classifier)
costs against the one product it cannot avoid, in one process (same threads, same device):

- time: `KNN(k=20, temperature=0.07).fit(train).predict(test)` (int8 inputs converted to float32 in
  row chunks, cosine scaling, deterministic top-k, weighted votes) against one explicit float32
  `test @ train.T` on float32 copies made beforehand (the ratio asked for), and against the same
  product with the int8 -> float32 conversion of both inputs timed with it (the least any float
  implementation does with int8 inputs); the three alternate, best of 3 each;
- memory: the peak above what the process held before predict (CPU: VmHWM after resetting it through
  /proc/self/clear_refs; GPU: torch.cuda.max_memory_allocated), against the int8 inputs' bytes and
  against a float32 copy of them (what an unchunked implementation would add first).

Cases: random int8 {-1, 0, 1} features, random labels. `default_job`: the default job's sizes (1,257
train x 540 test x 19,200 FNE columns, 10 classes); `large`: 10,000 x 5,000 x 4,096, 100 classes.
Targets: predict <= 1.25x the converted product (what the k-NN rule adds: norms, top-k, ties,
votes); memory above the inputs <= 6 x CHUNK_BYTES (768 MiB: the similarity block, a product block,
the float32 query and train chunks, each bounded by CHUNK_BYTES whatever the sizes). Prints a table,
writes benchmarks/results/knn_cost.json, exits 1 when a target is missed.

    python benchmarks/knn_cost.py [--rounds 3] [--cases default_job large]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tlbench.classifiers import KNN
from tlbench.classifiers.chunks import CHUNK_BYTES

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {"default_job": (1_257, 540, 19_200, 10), "large": (10_000, 5_000, 4_096, 100)}
TIME_TARGET = 1.25
MEMORY_TARGET = 6 * CHUNK_BYTES
MIB = 2**20


def ternary(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1, 2, size=(n, d), dtype=np.int8)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_of(rounds: int, calls: dict[str, Callable[[], object]], device: torch.device) -> dict[str, float]:
    """The best time of each call over `rounds`, the calls alternating within a round, so that a
    busy machine slows both alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def status_kib(key: str) -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith(key + ":")).split()[1])


def peak_above(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes the call held at its peak above what was held before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
    fn()
    return (status_kib("VmHWM") - before) * 1024


def measure(name: str, n_train: int, n_test: int, dim: int, classes: int, rounds: int, device: torch.device) -> dict:
    train, test = ternary(n_train, dim, seed=0), ternary(n_test, dim, seed=1)
    labels = np.random.default_rng(2).integers(0, classes, n_train)
    model = KNN(k=20, temperature=0.07, device=str(device)).fit(train, labels)
    model.predict(test[:8])  # warm-up: threads, kernels
    memory = peak_above(lambda: model.predict(test), device)
    a = torch.from_numpy(test.astype(np.float32)).to(device)
    b = torch.from_numpy(train.astype(np.float32)).to(device)
    a @ b.T  # warm-up
    ta, tb = torch.from_numpy(test), torch.from_numpy(train)
    calls = {
        "predict": lambda: model.predict(test),
        "product": lambda: a @ b.T,
        "converted_product": lambda: ta.to(device, torch.float32) @ tb.to(device, torch.float32).T,
    }
    best = best_of(rounds, calls, device)
    predict_s, product_s = best["predict"], best["product"]
    input_bytes = train.nbytes + test.nbytes
    row = {
        "case": name,
        "train": n_train,
        "test": n_test,
        "dim": dim,
        "classes": classes,
        "predict_s": round(predict_s, 4),
        "product_s": round(product_s, 4),
        "ratio": round(predict_s / product_s, 3),
        "converted_product_s": round(best["converted_product"], 4),
        "ratio_to_converted_product": round(predict_s / best["converted_product"], 3),
        "peak_above_inputs_mib": round(memory / MIB, 1),
        "int8_input_mib": round(input_bytes / MIB, 1),
        "peak_over_int8_input": round(memory / input_bytes, 2),
        "peak_over_float32_copy": round(memory / (4 * input_bytes), 3),
    }
    row["met"] = row["ratio_to_converted_product"] <= TIME_TARGET and memory <= MEMORY_TARGET
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    load_before = os.getloadavg()[0]  # other processes on the machine make the times noisy: recorded
    rows = [measure(name, *CASES[name], args.rounds, device) for name in args.cases]
    machine = {
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "torch": torch.__version__,
    }
    report = {
        "benchmark": "knn_cost",
        "rule": "DINO eval_knn.py knn_classifier: cosine, k=20, exp(s/0.07) votes",
        "targets": {"ratio_to_converted_product": TIME_TARGET, "peak_above_inputs_mib": MEMORY_TARGET / MIB},
        "results": rows,
        "machine": machine,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "date": time.strftime("%Y-%m-%d"),
    }
    load = report["load_average_1min"]
    print(f"{device}; {machine['torch_threads']} torch threads; load average {load['before']} -> {load['after']}")
    header = (
        f"{'case':<13}{'train x test x dim':>22}{'predict s':>11}{'A@B.T s':>9}{'ratio':>7}{'+conv s':>9}{'ratio':>7}"
    )
    print(header + f"{'peak MiB':>10}{'/ int8 in':>10}{'/ f32 copy':>11}")
    for r in rows:
        shape = f"{r['train']:,} x {r['test']:,} x {r['dim']:,}"
        print(
            f"{r['case']:<13}{shape:>22}{r['predict_s']:>11.3f}{r['product_s']:>9.3f}{r['ratio']:>7.2f}"
            f"{r['converted_product_s']:>9.3f}{r['ratio_to_converted_product']:>7.2f}"
            f"{r['peak_above_inputs_mib']:>10.1f}{r['peak_over_int8_input']:>10.2f}{r['peak_over_float32_copy']:>11.3f}"
        )
    print(
        f"A@B.T: float32 copies made beforehand; +conv: the int8 -> float32 conversion timed with it. Targets: "
        f"predict / (+conv) <= {TIME_TARGET}, peak above the inputs <= {MEMORY_TARGET / MIB:.0f} MiB"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "knn_cost.json").write_text(json.dumps(report, indent=2))
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
