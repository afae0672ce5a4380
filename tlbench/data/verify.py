"""`tlbench-data verify`: files present, counts as published, split-file checksums, every image decodable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from tlbench.data.build import build_dataset
from tlbench.data.download import file_checksum
from tlbench.data.registry import complete_listing, dataset_info
from tlbench.errors import ImageDecodeError, TlbenchError


@dataclass
class VerifyReport:
    dataset: str
    root: str
    split_sizes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_images: int = 0  # distinct image files the decoder tried (0 with decode=False)

    @property
    def decoded_images(self) -> int:
        """Checked images that decoded; the others are listed in `undecodable`, one line each with its reason."""
        return self.checked_images - len(self.undecodable)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.undecodable


def verify_dataset(name: str, root: str | Path, decode: bool = True, progress: bool = True, **params) -> VerifyReport:
    report = VerifyReport(name, str(root))
    info = dataset_info(name)
    try:
        splits = build_dataset(name, root=str(root), **params)
    except (TlbenchError, OSError) as exc:  # OSError: unreadable folders (permissions, a stale mount)
        report.problems.append(str(exc))
        return report
    report.split_sizes = {split: len(samples) for split, samples in splits.splits.items()}
    if info is not None:
        if not params:  # published class counts and sizes describe the default protocol
            if info.num_classes and len(splits.classes) != info.num_classes:
                report.problems.append(f"{len(splits.classes)} classes, expected {info.num_classes}")
            for split, expected in info.split_sizes.items():
                found = report.split_sizes.get(split)
                if found != expected:
                    report.problems.append(f"split {split}: {found} images, expected {expected}")
        base = Path(splits.root or root)
        if not info.checksums:
            report.notes.append("no published checksums of split files to compare with")
        for relpath, md5 in info.checksums.items():
            path = base / relpath
            if not path.is_file():
                report.problems.append(f"split file {path} is missing")
            elif file_checksum(path, "md5") != md5:
                report.problems.append(f"split file {path} differs from the published one (md5 mismatch)")
    if decode:
        listing = complete_listing(name)
        # Decode the whole archive where the protocol uses only part of it.
        to_decode = {"all": listing(str(root))} if listing is not None and not params else splits.splits
        _decode_all(to_decode, report, progress)
    return report


def _decode_all(split_samples: dict, report: VerifyReport, progress: bool) -> None:
    total = sum(len(s) for s in split_samples.values())
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("decoding images", total=total)
        seen: set[str] = set()
        for samples in split_samples.values():
            for index in range(len(samples)):
                where = samples.describe(index)
                if where not in seen:  # splits of one pool (few-shot, val holdout) share files
                    seen.add(where)
                    try:
                        samples.load(index)
                    except ImageDecodeError as exc:  # "<path>: <reason>"
                        report.undecodable.append(str(exc))
                    except Exception as exc:  # load_rgb raises nothing else; a loader's own bug is listed, not fatal
                        report.undecodable.append(f"{where}: cannot decode image ({type(exc).__name__}: {exc})")
                    report.checked_images += 1
                bar.advance(task)
