"""FNE post-processing: train-only standardization and the {-1, 0, 1} discretization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlbench.embedding.postprocess import FeaturePostprocess, Standardizer, discretize


def test_standardizer_uses_population_std_of_train_only():
    train = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]], dtype=np.float32)
    test = np.array([[100.0, 7.0, -3.0]], dtype=np.float32)
    scaler = Standardizer().fit(train)
    np.testing.assert_allclose(scaler.mean, train.mean(axis=0))
    np.testing.assert_allclose(scaler.std, train.std(axis=0, ddof=0))
    out = scaler.transform(test)
    # test statistics must not leak: the value is relative to the train mean/std
    assert out[0, 0] == pytest.approx((100.0 - 3.0) / np.std([1, 3, 5]))
    assert out[0, 1] == 0.0  # zero-std feature becomes 0, not inf/nan
    assert np.isfinite(out).all()
    assert out.dtype == np.float32


def test_standardized_train_has_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    train = rng.normal(3, 7, size=(200, 5)).astype(np.float32)
    z = Standardizer().fit(train).transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)


def test_discretize_at_and_around_thresholds():
    x = np.array([-1.0, -0.2501, -0.25, -0.2499, 0.0, 0.1499, 0.15, 0.1501, 2.0])
    out = discretize(x, negative=-0.25, positive=0.15)
    assert out.dtype == np.int8
    assert out.tolist() == [-1, -1, 0, 0, 0, 0, 0, 1, 1]


def test_discretize_thresholds_are_configurable_and_checked():
    x = np.array([-0.6, -0.4, 0.4, 0.6])
    assert discretize(x, -0.5, 0.5).tolist() == [-1, 0, 0, 1]
    with pytest.raises(ValueError, match="negative <= positive"):
        discretize(x, 0.5, -0.5)


def test_fne_postprocess_fits_on_train_and_reports_value_fractions():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    train[:, 3] = 2.0  # a dead channel
    post = FeaturePostprocess(standardize=True, discretize=True).fit(train)
    z = post.transform(train)
    assert set(np.unique(z)) <= {-1, 0, 1}
    assert (z[:, 3] == 0).all()
    info = post.describe(z)
    assert info["constant_features"] == 1
    assert sum(info["train_value_fractions"].values()) == pytest.approx(1.0, abs=1e-3)
    shifted = post.transform(train + 100.0)  # far above the train mean: all +1 except the dead one
    assert (np.delete(shifted, 3, axis=1) == 1).all()


def test_standardize_only_postprocess_keeps_real_values():
    train = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = FeaturePostprocess(standardize=True, discretize=False).fit(train).transform(train)
    assert out.dtype == np.float32 and len(np.unique(out)) > 3


def test_l2_per_image_gives_unit_norms_and_keeps_directions():
    rng = np.random.default_rng(2)
    train = rng.gamma(2.0, 3.0, size=(20, 6)).astype(np.float32)
    test = rng.gamma(2.0, 3.0, size=(5, 6)).astype(np.float32)
    test[2] = 0.0  # an all-zero vector (every ReLU off) stays zero, as in the original's nan_to_num
    post = FeaturePostprocess(standardize=False, l2_normalize="image").fit(train)
    out = post.transform(test)
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(np.delete(norms, 2), 1.0, rtol=1e-6)
    assert norms[2] == 0.0 and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], test[0] / np.linalg.norm(test[0]), rtol=1e-6)  # per image, no statistics
    info = post.describe(out)
    assert info["l2_normalize"] == "image" and info["l2_blocks"] == 1 and info["standardize"] is False


def test_l2_per_layer_normalizes_each_taps_columns():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 9)).astype(np.float32)
    layout = [("conv", 2), ("fc6", 4), ("fc7", 3)]
    out = FeaturePostprocess(standardize=False, l2_normalize="layer").fit(x, layout).transform(x)
    for start, stop in ((0, 2), (2, 6), (6, 9)):
        np.testing.assert_allclose(np.linalg.norm(out[:, start:stop], axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)  # not the whole vector
    whole = FeaturePostprocess(standardize=False, l2_normalize="image").fit(x, layout).transform(x)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the features' layout"):
        FeaturePostprocess(standardize=False, l2_normalize="layer").fit(x)
    with pytest.raises(ValueError, match="covers 8 columns"):
        FeaturePostprocess(standardize=False, l2_normalize="layer").fit(x, [*layout[:2], ("fc7", 2)])
    with pytest.raises(ValueError, match="null, image or layer"):
        FeaturePostprocess(l2_normalize="l1")


def test_l2_then_standardize_takes_statistics_of_the_normalized_train_rows():
    rng = np.random.default_rng(4)
    train = rng.gamma(2.0, 3.0, size=(300, 5)).astype(np.float32)
    post = FeaturePostprocess(standardize=True, l2_normalize="image").fit(train)
    normalized = train / np.linalg.norm(train, axis=1, keepdims=True)
    np.testing.assert_allclose(post.standardizer.mean, normalized.mean(axis=0), rtol=1e-5)
    z = post.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)


def _mapped_rss_kib(path) -> int:
    """Resident KiB of this process's maps of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:  # a mapping's header line
            inside = line.endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_memory_mapped_features_give_the_same_inputs_and_leave_no_pages_mapped(tmp_path, monkeypatch):
    """The FeatureStore's memory-mapped matrix is read in copied chunks whose pages are then dropped
    from the map: the same inputs as from memory, and the matrix does not stay in the RSS."""
    monkeypatch.setattr("tlbench.embedding.store.CHUNK_BYTES", 4096 * 8)  # several chunks
    train = np.random.default_rng(3).normal(0, 1, size=(3000, 37)).astype(np.float32)
    path = tmp_path / "features.npy"
    np.save(path, train)
    mapped = np.load(path, mmap_mode="r")
    for steps in ({"discretize": True}, {"l2_normalize": "image"}, {"standardize": False}):
        ours = FeaturePostprocess(**steps).fit(mapped)
        reference = FeaturePostprocess(**steps).fit(train)
        np.testing.assert_array_equal(ours.transform(mapped), reference.transform(train))
    assert _mapped_rss_kib(path) <= 8  # of 434 KiB read, each page several times
    np.asarray(mapped).sum()  # read through the map as it is: the pages stay (the check checks)
    assert _mapped_rss_kib(path) * 1024 >= train.nbytes
