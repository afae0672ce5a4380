"""`tlbench-data`: list the registered datasets, verify a copy on disk, download where possible."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tlbench.data import available_datasets, dataset_info
from tlbench.data.download import download, extract
from tlbench.data.verify import verify_dataset
from tlbench.errors import DatasetError, TlbenchError

console = Console()


def cmd_list(args: argparse.Namespace) -> int:
    table = Table(title="tlbench datasets")
    for column in ("name", "title", "classes", "split sizes", "metric", "download"):
        table.add_column(column, no_wrap=column in ("name", "metric"))
    for name in available_datasets():
        info = dataset_info(name)
        if info is None:
            table.add_row(name, "", "", "", "top1", "")
            continue
        sizes = " / ".join(f"{k} {v:,}" for k, v in info.split_sizes.items()) or "varies"
        table.add_row(
            name,
            info.title,
            str(info.num_classes or "any"),
            sizes,
            info.metric,
            "bundled" if info.bundled else "yes" if info.resources else "by hand",
        )
    console.print(table)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify_dataset(args.name, args.root, decode=not args.no_decode, progress=not args.quiet)
    sizes = ", ".join(f"{k} {v}" for k, v in report.split_sizes.items())
    if args.no_decode:
        decoded = "0 images decoded (--no-decode)"
    elif report.undecodable:
        decoded = (
            f"{report.decoded_images} images decoded, {len(report.undecodable)} undecodable "
            f"(of {report.checked_images} checked)"
        )
    else:
        decoded = f"{report.decoded_images} images decoded"
    console.print(escape(f"{args.name} at {args.root}: {sizes or 'no splits'}; {decoded}"), soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    for failure in report.undecodable:
        console.print(f"[red]cannot decode:[/red] {escape(failure)}", highlight=False, soft_wrap=True)
    if report.ok:
        console.print("[green]OK[/green]")
        return 0
    console.print(f"[red]{len(report.problems)} problems, {len(report.undecodable)} undecodable images[/red]")
    return 1


def cmd_download(args: argparse.Namespace) -> int:
    info = dataset_info(args.name)
    root = Path(args.root)
    if info is not None and info.bundled:
        console.print(escape(f"{args.name}: {info.instructions}"), highlight=False, soft_wrap=True)
        return 0
    if info is None or not info.resources:
        instructions = info.instructions if info else ""
        console.print(escape(f"{args.name} has no public download. {instructions}"), highlight=False, soft_wrap=True)
        if info is not None:
            console.print(escape(f"Expected layout under {root}:\n{info.layout}"), highlight=False, soft_wrap=True)
        return 2
    for resource in info.resources:
        path = download(resource, root / "downloads")
        if resource.extract:
            console.print(f"extracting {path.name} into {root}")
            extract(path, root)
            for inner in resource.nested:  # e.g. Caltech101's zip holds a .tar.gz
                if not (root / inner).is_file():
                    raise DatasetError(f"{path.name} did not contain {inner}; expected it at {root / inner}")
                console.print(f"extracting {inner}")
                extract(root / inner, (root / inner).parent)
        else:
            target = root / resource.filename
            if not target.exists():
                target.write_bytes(path.read_bytes())
    console.print(f"done; check it with: tlbench-data verify {args.name} --root {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlbench-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered datasets: classes, split sizes, metric, download").set_defaults(
        func=cmd_list
    )
    verify = sub.add_parser(
        "verify",
        help="check a dataset copy: files, counts, checksums, decodable images",
        epilog="Each file that a run would skip is listed with the reason (empty, not an image, truncated, "
        "unreadable, a broken link, ...). Images over PIL's Image.MAX_IMAGE_PIXELS (89,478,485 pixels by default) are "
        "refused as decompression bombs; set TLBENCH_MAX_IMAGE_PIXELS=<pixels> (0: no limit) to decode larger ones.",
    )
    verify.add_argument("name", choices=available_datasets())
    verify.add_argument("--root", required=True)
    verify.add_argument("--no-decode", action="store_true", help="skip decoding every image")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=cmd_verify)
    fetch = sub.add_parser("download", help="download and extract (login nodes), or print instructions")
    fetch.add_argument("name", choices=available_datasets())
    fetch.add_argument("--root", required=True)
    fetch.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TlbenchError as exc:
        print(f"tlbench-data: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
