"""Default job timing: the first run (extracts) against a rerun (cache hit), as a ratio.

Targets (issue: foundation): the first run finishes within 180 s on 2 CPU cores; the rerun takes
at most 1/5 of the first run's wall time. Both runs are whole `tlbench` processes, start-up
included, with a fresh output and cache folder. Prints a table and writes default_job.json.

    python benchmarks/default_job.py [--out benchmarks/results] [extra overrides...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(workdir: Path, name: str, overrides: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "TLBENCH_OUTPUT_DIR": str(workdir / "outputs"), "TLBENCH_CACHE_DIR": str(workdir / "cache")}
    run_dir = workdir / name
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tlbench.cli", *overrides, f"hydra.run.dir={run_dir}"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - start
    return elapsed, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        first_s, first = timed_run(Path(tmp), "first", args.overrides)
        rerun_s, rerun = timed_run(Path(tmp), "rerun", args.overrides)
    assert rerun["cache"] == {split: "hit" for split in first["cache"]}, rerun["cache"]
    ratio = rerun_s / first_s
    report = {
        "benchmark": "default_job",
        "overrides": args.overrides,
        "first_run_s": round(first_s, 2),
        "rerun_s": round(rerun_s, 2),
        "rerun_over_first": round(ratio, 3),
        "target_rerun_over_first": 0.2,
        "target_first_run_s": 180,
        "test_top1": first["metrics"]["test"]["top1"],
        "phases_first_s": first["timings"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "host": platform.node()},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{'figure':<28}{'value':>10}{'target':>10}")
    print(f"{'first run (s)':<28}{first_s:>10.1f}{'<= 180':>10}")
    print(f"{'rerun, cache hit (s)':<28}{rerun_s:>10.1f}")
    print(f"{'rerun / first':<28}{ratio:>10.3f}{'<= 0.2':>10}")
    print(f"{'test top-1':<28}{first['metrics']['test']['top1']:>10.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "default_job.json").write_text(json.dumps(report, indent=2))
    ok = first_s <= 180 and ratio <= 0.2
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
