"""`tlbench-data` in-process (main(argv)) plus one subprocess run of `python -m tlbench.data_cli list`:
list, verify (counts, checksums, undecodable images), download (instructions, HTTP with resume,
checksum mismatch, atomic extraction)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import re
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import COLORS, write_image
from fixtures.cifar import build as build_cifar
from rich.console import Console

from tlbench import data_cli
from tlbench.data import available_datasets, build_dataset, dataset_info, registry
from tlbench.data.download import extract
from tlbench.data.registry import Resource
from tlbench.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
CIFAR10_FILES = [*(f"data_batch_{b}" for b in range(1, 6)), "test_batch", "batches.meta"]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run main(argv) in-process with a wide console (no wrapping); returns (rc, stdout, stderr)."""
    monkeypatch.setattr(data_cli, "console", Console(width=1000, color_system=None))

    def run(*argv: str) -> tuple[int, str, str]:
        rc = data_cli.main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err

    return run


def patch_info(monkeypatch: pytest.MonkeyPatch, name: str, **changes) -> None:
    monkeypatch.setitem(registry._INFO, name, dataclasses.replace(registry._INFO[name], **changes))


def table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line)[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


# --- list ---


def expected_row(name: str) -> list[str]:
    info = dataset_info(name)
    if info is None:  # registered without metadata
        return [name, "", "", "", "top1", ""]
    sizes = " / ".join(f"{k} {v:,}" for k, v in info.split_sizes.items()) or "varies"
    return [
        name,
        info.title,
        str(info.num_classes or "any"),
        sizes,
        info.metric,
        "bundled" if info.bundled else "yes" if info.resources else "by hand",
    ]


def test_list_shows_every_dataset(cli) -> None:
    rc, out, _ = cli("list")
    assert rc == 0
    rows = table_rows(out)
    assert rows["name"] == ["name", "title", "classes", "split sizes", "metric", "download"]
    assert set(rows) - {"name"} == set(available_datasets())
    for name in available_datasets():
        assert rows[name] == expected_row(name)
    assert rows["cifar10"] == ["cifar10", "CIFAR-10", "10", "train 50,000 / test 10,000", "top1", "yes"]
    assert rows["imagefolder"][2:] == ["any", "varies", "top1", "by hand"]
    assert rows["digits"][-1] == "bundled" and rows["stanford_cars"][-1] == "by hand"


def test_download_of_bundled_data_needs_nothing(cli, tmp_path) -> None:
    rc, out, _ = cli("download", "digits", "--root", str(tmp_path))
    assert rc == 0 and "scikit-learn" in out
    assert list(tmp_path.iterdir()) == []


def test_list_in_a_pipe_keeps_names_whole(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(data_cli, "console", Console(width=80, color_system=None))
    assert data_cli.main(["list"]) == 0
    out = capsys.readouterr().out
    names = set(table_rows(out))
    assert set(available_datasets()) <= names
    assert "mean_per_class" in out


def test_list_as_a_module_subprocess() -> None:
    env = {**os.environ, "COLUMNS": "250"}
    proc = subprocess.run(
        [sys.executable, "-m", "tlbench.data_cli", "list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    # the subprocess lists tlbench's own datasets; a test may have registered more in this process
    builtin = [
        name for name in available_datasets() if registry.dataset_builder(name).__module__.startswith("tlbench.")
    ]
    assert len(builtin) >= 16
    for name in builtin:
        assert rows[name] == expected_row(name)


# --- verify ---


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    return build_cifar(tmp_path / "cifar", "cifar10", per_class=2, test_per_class=1)


def test_verify_cifar10_passes_when_counts_and_checksums_match(cli, monkeypatch, cifar_root: Path) -> None:
    folder = cifar_root / "cifar-10-batches-py"
    patch_info(
        monkeypatch,
        "cifar10",
        split_sizes={"train": 100, "test": 10},
        checksums={f: md5(folder / f) for f in CIFAR10_FILES},
    )
    rc, out, _ = cli("verify", "cifar10", "--root", str(cifar_root), "--quiet")
    assert rc == 0, out
    assert f"cifar10 at {cifar_root}: train 100, test 10; 110 images decoded" in out
    assert "OK" in out and "problem" not in out


def test_verify_cifar10_lists_count_and_checksum_problems(cli, cifar_root: Path) -> None:
    rc, out, _ = cli("verify", "cifar10", "--root", str(cifar_root), "--quiet")
    assert rc == 1
    assert "problem: split train: 100 images, expected 50000" in out
    assert "problem: split test: 10 images, expected 10000" in out
    folder = cifar_root / "cifar-10-batches-py"
    for name in CIFAR10_FILES:  # the fixture's batches are not the published ones
        assert f"problem: split file {folder / name} differs from the published one (md5 mismatch)" in out
    assert f"{2 + len(CIFAR10_FILES)} problems, 0 undecodable images" in out
    assert "OK" not in out


def test_verify_reports_a_missing_root_as_a_problem(cli, tmp_path: Path) -> None:
    rc, out, _ = cli("verify", "cifar10", "--root", str(tmp_path / "absent"), "--quiet")
    assert rc == 1
    assert "problem: CIFAR-10 (cifar10):" in out and "is missing batches.meta" in out
    assert f"tlbench-data download cifar10 --root {tmp_path / 'absent'}" in out


def test_verify_imagefolder_finds_a_truncated_jpeg(cli, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for c, (name, color) in enumerate(COLORS.items()):
        for split, count in (("train", 3), ("test", 2)):
            for i in range(count):
                write_image(root / split / name / f"{i}.jpg", color, size=16, seed=10 * c + i)
    bad = root / "test" / "green" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    rc, out, _ = cli("verify", "imagefolder", "--root", str(root), "--quiet")
    assert rc == 1
    assert re.search(rf"cannot decode: {re.escape(str(bad))}: cannot decode image \(.+\)$", out, re.M)
    assert out.count("cannot decode:") == 1
    assert "14 images decoded" in out or "15 images decoded" in out
    assert "0 problems, 1 undecodable images" in out
    rc, out, _ = cli("verify", "imagefolder", "--root", str(root), "--quiet", "--no-decode")
    assert rc == 0 and "0 images decoded" in out and "OK" in out


def test_verify_prints_paths_with_brackets_verbatim(cli, tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for split in ("train", "test"):
        for name, color in (("plain", (200, 20, 20)), ("odd[/b]name", (20, 20, 200))):
            for i in range(2):
                write_image(root / split / name / f"{i}.jpg", color, size=8, seed=i)
    bad = root / "test" / "odd[/b]name" / "0.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    rc, out, _ = cli("verify", "imagefolder", "--root", str(root), "--quiet")
    assert rc == 1 and f"cannot decode: {bad}:" in out


# --- download ---


def test_download_without_resources_prints_instructions(cli, tmp_path: Path) -> None:
    rc, out, _ = cli("download", "imagefolder", "--root", str(tmp_path / "x"))
    assert rc == 2
    assert "imagefolder has no public download. point dataset.root at your own folder" in out
    assert f"Expected layout under {tmp_path / 'x'}:" in out and "ROOT/train/<class>/<image>" in out
    assert not (tmp_path / "x").exists()


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    """A cifar-10-python.tar.gz of the fixture, laid out as the real one (top folder cifar-10-batches-py)."""
    source = build_cifar(tmp_path / "src", "cifar10", per_class=2, test_per_class=1)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (`bytes=N-`), as the real download servers do."""

    requests: ClassVar[list[str | None]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        type(self).requests.append(header)
        if not header:
            return super().do_GET()
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        start = int(header.removeprefix("bytes=").rstrip("-"))
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def http_base(cifar_archive: Path):
    """http://127.0.0.1:PORT serving the archive's folder, with Range support; records Range headers."""
    RangeHandler.requests = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(RangeHandler, directory=str(cifar_archive.parent))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def patch_resource(monkeypatch, url: str, md5sum: str) -> None:
    patch_info(monkeypatch, "cifar10", resources=(Resource(url=url, filename="cifar-10-python.tar.gz", md5=md5sum),))


def assert_extracted_and_verifies(cli, monkeypatch, root: Path, source: Path) -> None:
    folder = root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CIFAR10_FILES)
    assert not [p for p in root.iterdir() if p.name.startswith(".extract-")]
    patch_info(
        monkeypatch,
        "cifar10",
        split_sizes={"train": 100, "test": 10},
        checksums={f: md5(source / "cifar-10-batches-py" / f) for f in CIFAR10_FILES},
    )
    rc, out, _ = cli("verify", "cifar10", "--root", str(root), "--quiet")
    assert rc == 0, out
    assert len(build_dataset("cifar10", root=str(root)).splits["train"]) == 100


def test_download_fetches_verifies_and_extracts(cli, monkeypatch, tmp_path, cifar_archive, http_base) -> None:
    patch_resource(monkeypatch, f"{http_base}/cifar-10-python.tar.gz", md5(cifar_archive))
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "stale_file").write_text("from an older copy")  # replaced whole
    rc, out, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 0, err
    assert f"extracting cifar-10-python.tar.gz into {root}" in out
    assert f"done; check it with: tlbench-data verify cifar10 --root {root}" in out
    downloaded = root / "downloads" / "cifar-10-python.tar.gz"
    assert downloaded.read_bytes() == cifar_archive.read_bytes()
    assert sorted(p.name for p in downloaded.parent.iterdir()) == ["cifar-10-python.tar.gz"]  # no .part left
    assert_extracted_and_verifies(cli, monkeypatch, root, tmp_path / "src")
    # a second run finds the verified archive and does not fetch it again
    count = len(RangeHandler.requests)
    patch_resource(monkeypatch, f"{http_base}/cifar-10-python.tar.gz", md5(cifar_archive))
    assert cli("download", "cifar10", "--root", str(root))[0] == 0
    assert len(RangeHandler.requests) == count


def test_download_resumes_a_partial_file(cli, monkeypatch, tmp_path, cifar_archive, http_base) -> None:
    patch_resource(monkeypatch, f"{http_base}/cifar-10-python.tar.gz", md5(cifar_archive))
    root = tmp_path / "data"
    data = cifar_archive.read_bytes()
    part = root / "downloads" / "cifar-10-python.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    rc, _, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 0, err
    assert RangeHandler.requests == ["bytes=1000-"]  # only the rest was fetched
    assert (root / "downloads" / "cifar-10-python.tar.gz").read_bytes() == data
    assert not part.exists()
    assert_extracted_and_verifies(cli, monkeypatch, root, tmp_path / "src")


def test_download_finishes_a_complete_part_file(cli, monkeypatch, tmp_path, cifar_archive, http_base) -> None:
    patch_resource(monkeypatch, f"{http_base}/cifar-10-python.tar.gz", md5(cifar_archive))
    root = tmp_path / "data"
    part = root / "downloads" / "cifar-10-python.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(cifar_archive.read_bytes())
    rc, _, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 0, err
    assert (root / "cifar-10-batches-py" / "batches.meta").is_file()


def test_download_from_a_file_url(cli, monkeypatch, tmp_path, cifar_archive) -> None:
    patch_resource(monkeypatch, cifar_archive.as_uri(), md5(cifar_archive))
    root = tmp_path / "data"
    rc, _, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 0, err
    assert_extracted_and_verifies(cli, monkeypatch, root, tmp_path / "src")


def test_download_checksum_mismatch_keeps_bad_file(cli, monkeypatch, tmp_path, cifar_archive, http_base) -> None:
    url = f"{http_base}/cifar-10-python.tar.gz"
    patch_resource(monkeypatch, url, "0" * 32)
    root = tmp_path / "data"
    rc, out, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 2
    bad = root / "downloads" / "cifar-10-python.tar.gz.part.bad"
    assert f"tlbench-data: error: {url}: checksum mismatch; the file was kept as {bad}" in err
    assert bad.read_bytes() == cifar_archive.read_bytes()
    assert sorted(p.name for p in root.iterdir()) == ["downloads"]  # nothing extracted
    assert sorted(p.name for p in bad.parent.iterdir()) == [bad.name]
    assert "done" not in out


def test_interrupted_extraction_leaves_no_partial_folder(tmp_path: Path, cifar_archive: Path) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(cifar_archive.read_bytes()[: cifar_archive.stat().st_size // 2])
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="corrupt"):
        extract(truncated, root)
    assert list(root.iterdir()) == []


def test_download_of_a_corrupt_archive_is_an_actionable_error(cli, monkeypatch, tmp_path, cifar_archive) -> None:
    cifar_archive.write_bytes(cifar_archive.read_bytes()[: cifar_archive.stat().st_size // 2])
    root = tmp_path / "data"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / cifar_archive.name).write_bytes(cifar_archive.read_bytes())
    patch_resource(monkeypatch, "http://127.0.0.1:9/unused", md5(cifar_archive))  # already downloaded
    rc, _, err = cli("download", "cifar10", "--root", str(root))
    assert rc == 2 and "tlbench-data: error:" in err and cifar_archive.name in err
