"""`verify` decodes the whole archive where a protocol uses only part of it, counts decoded and undecodable
images apart, lists a loader's unexpected error instead of crashing, and says when no split-file checksum
is published. (Hostile files: tests/test_hostile_inputs.py.)"""

from __future__ import annotations

from fixtures import sun397

from tlbench.data import build_dataset
from tlbench.data.samples import FileSamples
from tlbench.data.verify import verify_dataset


def test_verify_decodes_images_outside_the_default_partition(tmp_path):
    root = sun397.build(tmp_path / "sun", per_class=6, per_split=2)
    used = {
        samples.describe(i)
        for samples in build_dataset("sun397", root=str(root), split_id=1).splits.values()
        for i in range(len(samples))
    }
    outside = next(p for p in sorted((root / "SUN397").rglob("sun_*.jpg")) if str(p) not in used)
    outside.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    report = verify_dataset("sun397", root, progress=False)
    assert any(str(outside) in failure for failure in report.undecodable)
    assert report.checked_images == len(list((root / "SUN397").rglob("sun_*.jpg")))
    assert report.decoded_images == report.checked_images - 1
    assert not report.ok


def test_verify_lists_a_loader_error_instead_of_crashing(tmp_path, monkeypatch):
    """load_rgb raises only ImageDecodeError; any other error of a dataset's own `load` is listed too."""
    root = sun397.build(tmp_path / "sun", per_class=2, per_split=1)
    images = sorted((root / "SUN397").rglob("sun_*.jpg"))
    original = FileSamples.load

    def load(self, index):
        if self.path(index) == images[0]:
            raise RuntimeError("a bug in a loader")
        return original(self, index)

    monkeypatch.setattr(FileSamples, "load", load)
    report = verify_dataset("sun397", root, progress=False)
    assert report.undecodable == [f"{images[0]}: cannot decode image (RuntimeError: a bug in a loader)"]
    assert (report.checked_images, report.decoded_images) == (len(images), len(images) - 1)


def test_verify_notes_missing_published_checksums(tmp_path):
    root = sun397.build(tmp_path / "sun")
    report = verify_dataset("sun397", root, decode=False, progress=False)
    assert "no published checksums of split files to compare with" in report.notes
