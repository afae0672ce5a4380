"""tlbench-report [PATH...] : one table from the results.json files of many runs. A cell averages the
runs that differ only by seed or split; runs that differ in another setting get rows of their own,
labelled with it. With --rows method --cols dataset and a preset's paper numbers in the runs'
config (config.paper), a second table compares ours with the paper on the paper's metric.

tlbench-report                     (every run in $TLBENCH_OUTPUT_DIR/runs and /multiruns, else outputs/)
tlbench-report outputs/multiruns/2026-11-28_10-00-00
tlbench-report outputs/ --rows model --cols dataset --metric top1 --out report/
tlbench-report outputs/runs --rows method --cols dataset        (+ ours / paper)
tlbench-report outputs/ --rows method --cols dataset --compare fne fc7   (paired tests of two rows)
tlbench-report compare RUN_A RUN_B [--metric top1] [--resamples 10000]  (two runs, same test images)
tlbench-report outputs/ --scores   (do transferability scores rank models/datasets as accuracy does?)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tlbench.errors import TlbenchError
from tlbench.report.collect import collect
from tlbench.report.from_wandb import collect_wandb
from tlbench.report.paper import paper_comparison
from tlbench.report.table import build_table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlbench-report",
        description="Gather results.json files (run dirs, multirun dirs, outputs/) into one table: "
        "mean ± std over seeds/splits per cell, best per column marked; Markdown on stdout, and "
        "report.md, report.csv, report.tex and report.png in --out. Runs of one row and column that "
        "differ in another setting than seed or split (classifier.C, dataset.train_per_class, ...) "
        "are not averaged: each setting gets its own row, e.g. 'finetune [classifier.C=0.1]'. With "
        "--rows method --cols dataset, runs of a preset with paper numbers (config.paper) are also "
        "compared with the paper, on the paper's metric whatever --metric shows. "
        "`tlbench-report compare RUN_A RUN_B` compares two runs on the same test images instead "
        "(paired bootstrap, McNemar; see tlbench-report compare --help).",
    )
    p.add_argument(
        "paths",
        nargs="*",
        help="run directories, multirun directories or results.json files (default: runs/ and multiruns/ "
        "in $TLBENCH_OUTPUT_DIR, where tlbench writes them, or in outputs/ when it is not set)",
    )
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead (needs network)")
    p.add_argument(
        "--rows",
        default="strategy",
        help="row key: method (the strategy, last_layer named by its layer: fc6, fc7), dataset, model, "
        "strategy, seed or a dotted config path (classifier.C); a null value is a row named null",
    )
    p.add_argument("--cols", default="dataset", help="column key (same choices as --rows)")
    p.add_argument(
        "--metric",
        default="headline",
        choices=["headline", "top1", "mean_per_class"],
        help="headline: each dataset's own metric (default); the paper comparison uses the paper's metric",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("ROW_A", "ROW_B"),
        help="also compare two rows: per column, their runs paired by seed/split, with paired t and Wilcoxon "
        "tests over the pairs, and McNemar and a paired bootstrap over the test images where the runs have "
        "predictions.npz; printed after the table and written to compare.md and compare.csv in --out",
    )
    p.add_argument(
        "--scores",
        action="store_true",
        help="also: per dataset across models and per model across datasets, Kendall's tau of each "
        "transferability score (runs with analysis=layer_curve) with the test accuracy, beside a naive "
        "baseline's (ImageNet top-1; chance 1/classes); written to scores.md and scores.csv in --out",
    )
    p.add_argument(
        "--resamples",
        type=_positive_int,
        default=10000,
        help="bootstrap resamples for --compare (default 10000); --scores uses at most 2000",
    )
    p.add_argument(
        "--out",
        help="folder for report.{md,csv,tex,png} (default: report/ in $TLBENCH_OUTPUT_DIR, or outputs/report)",
    )
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlbench-report compare",
        description="Compare two runs evaluated on the same test images (same dataset, split and image "
        "indices, from their predictions.npz): each run's test metric, the difference A - B with a paired "
        "bootstrap 95% interval over the test images, and McNemar's exact test on the images only one run "
        "gets right. Fine-tuning runs write no predictions.npz yet.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run directory (or its results.json)")
    p.add_argument("run_b", metavar="RUN_B", help="run directory (or its results.json)")
    p.add_argument(
        "--metric",
        default="headline",
        choices=["headline", "top1", "mean_per_class"],
        help="headline: the dataset's own metric (default)",
    )
    p.add_argument("--resamples", type=_positive_int, default=10000, help="bootstrap resamples (default 10000)")
    return p


def compare_main(argv: list[str]) -> int:
    """tlbench-report compare RUN_A RUN_B."""
    args = compare_parser().parse_args(argv)
    from tlbench.report.compare import compare_runs, load_run  # scipy: only when comparing

    try:
        comparison = compare_runs(load_run(args.run_a), load_run(args.run_b), args.metric, args.resamples)
    except TlbenchError as exc:
        print(f"tlbench-report: error: {exc}", file=sys.stderr)
        return 2
    for warning in comparison.warnings:
        print(f"tlbench-report: warning: {warning}", file=sys.stderr)
    print(comparison.text())
    return 0


def output_dir() -> tuple[Path, str]:
    """Where tlbench writes its runs (conf/paths/default.yaml: paths.output_dir), and how that was
    decided: $TLBENCH_OUTPUT_DIR (a slurm/ site file exports it), else outputs/ in this folder."""
    env = os.environ.get("TLBENCH_OUTPUT_DIR")
    if env:
        return Path(env), f"TLBENCH_OUTPUT_DIR={env}"
    return Path("outputs"), "TLBENCH_OUTPUT_DIR is not set, so outputs/ in the current folder"


def default_paths() -> list[Path]:
    """runs/ and multiruns/ of the output folder (single runs and Hydra multiruns), those that exist."""
    base, why = output_dir()
    folders = [base / "runs", base / "multiruns"]
    found = [f for f in folders if f.is_dir()]
    if not found:
        raise TlbenchError(
            f"no result paths given, and neither {folders[0]} nor {folders[1]} exists ({why}): give result "
            "paths, or --wandb ENTITY/PROJECT, or `source` the slurm/ site file your jobs used (it exports "
            "TLBENCH_OUTPUT_DIR, where they wrote their runs) or export TLBENCH_OUTPUT_DIR=..., and run "
            "tlbench-report again"
        )
    print(f"tlbench-report: reading {', '.join(map(str, found))} ({why})", file=sys.stderr)
    return found


def check_paths(paths: list[str] | list[Path]) -> None:
    """A path that does not exist is an error that says where tlbench writes runs."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if not missing:
        return
    base, why = output_dir()
    raise TlbenchError(
        f"{', '.join(missing)} does not exist. tlbench writes runs to {base / 'runs'} and Hydra multiruns to "
        f"{base / 'multiruns'} ({why}); jobs submitted with a slurm/ site file use its TLBENCH_OUTPUT_DIR. "
        "Run tlbench-report with no path to read both, after `source`-ing the site file (or export "
        "TLBENCH_OUTPUT_DIR=...)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:  # a results folder named compare: pass it as ./compare
        return compare_main(argv[1:])
    args = parser().parse_args(argv)
    rows = None
    try:
        if args.wandb and args.paths:
            raise TlbenchError("give result paths, or --wandb ENTITY/PROJECT (not both)")
        if args.wandb and args.scores:
            raise TlbenchError(
                "--scores reads the layer curves in the runs' results.json files, which --wandb does not fetch: "
                "give the run directories instead"
            )
        if args.wandb:
            found = collect_wandb(args.wandb)
        else:
            paths = args.paths or default_paths()
            check_paths(paths)
            found = collect(paths)
        for path, why in found.skipped:
            print(f"tlbench-report: skipped {path}: {why}", file=sys.stderr)
        if not found.results:
            raise TlbenchError("every results.json found was unreadable (listed above)")
        table = build_table(found.results, args.rows, args.cols, args.metric)
        comparison = paper_comparison(table)
        if args.compare:
            from tlbench.report.compare import compare_rows  # scipy: only when comparing

            rows = compare_rows(table, *args.compare, resamples=args.resamples)
        scores = None
        if args.scores:
            from tlbench.report.scores import score_report  # scipy: only when asked

            scores = score_report(found.results, args.metric, resamples=min(args.resamples, 2000))
    except TlbenchError as exc:
        print(f"tlbench-report: error: {exc}", file=sys.stderr)
        return 2
    for warning in comparison.warnings:
        print(f"tlbench-report: warning: {warning}", file=sys.stderr)
    out = Path(args.out) if args.out else output_dir()[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    markdown = table.markdown()
    if comparison.markdown:
        markdown += "\nours / paper (ours - paper), test %, on the paper's metric:\n\n" + comparison.markdown
    (out / "report.md").write_text(markdown)
    (out / "report.csv").write_text(table.csv())
    (out / "report.tex").write_text(table.latex())
    from tlbench.report.plot import save_figure  # matplotlib: not for --help or an error

    save_figure(table, out / "report.png")
    written = "report.md, report.csv, report.tex, report.png"
    if rows is not None:
        (out / "compare.md").write_text(rows.title() + "\n\n" + rows.markdown())
        (out / "compare.csv").write_text(rows.csv())
        written += ", compare.md, compare.csv"
    if scores is not None:
        (out / "scores.md").write_text(scores.markdown())
        (out / "scores.csv").write_text(scores.csv())
        written += ", scores.md, scores.csv"
    metric = "each dataset's headline metric" if args.metric == "headline" else args.metric
    print(f"test {metric}, % (mean±std (n) over seeds/splits; best per column in bold), {len(found.results)} runs:\n")
    print(markdown)
    if rows is not None:
        print(rows.title() + "\n")
        print(rows.markdown())
    if scores is not None:
        print("transferability scores against test accuracy (Kendall's tau):\n")
        print(scores.markdown())
    print(f"written: {out}/{written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
