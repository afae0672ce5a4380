"""`verify` decodes the whole archive where a protocol uses only part of it, and says when no
split-file checksum is published."""

from __future__ import annotations

from fixtures import sun397

from tlbench.data import build_dataset
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
    assert not report.ok


def test_verify_notes_missing_published_checksums(tmp_path):
    root = sun397.build(tmp_path / "sun")
    report = verify_dataset("sun397", root, decode=False, progress=False)
    assert "no published checksums of split files to compare with" in report.notes
