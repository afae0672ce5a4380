"""Downloads for login nodes: resumable, checksum-verified, extracted atomically."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from tlbench.data.registry import Resource
from tlbench.errors import DatasetError


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, resource: Resource) -> bool:
    if resource.sha256:
        return file_checksum(path, "sha256") == resource.sha256
    if resource.sha1:
        return file_checksum(path, "sha1") == resource.sha1
    if resource.md5:
        return file_checksum(path, "md5") == resource.md5
    return True  # nothing published to compare with


def download(resource: Resource, folder: Path, timeout: float = 60.0) -> Path:
    """Fetch `resource` into folder; a `.part` file from an interrupted run is resumed (HTTP Range)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / resource.filename
    if target.exists() and verify_checksum(target, resource):
        return target
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(resource.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", None)
            if offset and status != 206:  # the server ignored the range (or file://): start again
                offset = 0
            length = getattr(response, "length", None) or int(response.headers.get("Content-Length") or 0) or None
            total = length + offset if length else None
            with open(part, "ab" if offset else "wb") as out, _progress() as progress:
                task = progress.add_task(resource.filename, total=total, completed=offset)
                while block := response.read(1 << 20):
                    out.write(block)
                    progress.advance(task, len(block))
    except urllib.error.HTTPError as exc:
        if exc.code != 416:  # 416: the .part is already complete (killed before the rename)
            raise DatasetError(f"download of {resource.url} failed: HTTP {exc.code} {exc.reason}") from exc
    except OSError as exc:
        raise DatasetError(
            f"download of {resource.url} failed ({exc}); run the same command again to resume "
            f"({part} keeps what arrived), or fetch the file by hand into {folder}"
        ) from exc
    if not verify_checksum(part, resource):
        bad = part.with_name(part.name + ".bad")
        os.replace(part, bad)
        raise DatasetError(f"{resource.url}: checksum mismatch; the file was kept as {bad}. Download it again.")
    os.replace(part, target)
    return target


def extract(archive: Path, destination: Path) -> None:
    """Unpack into a temporary folder beside `destination`, then move each top-level entry into
    place: an interrupted extraction never leaves a half-filled dataset folder behind."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=destination) as tmp:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive, "r:*") as tf:  # compression detected from content
                    tf.extractall(tmp, filter="data")
            else:
                raise DatasetError(f"{archive} is neither a zip nor a tar archive")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DatasetError(f"{archive} is corrupt ({exc}); delete it and download again") from exc
        for entry in Path(tmp).iterdir():
            final = destination / entry.name
            if final.exists():
                if final.is_dir():
                    shutil.rmtree(final)
                else:
                    final.unlink()
            os.replace(entry, final)


def _progress() -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
