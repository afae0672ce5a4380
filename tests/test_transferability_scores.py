"""tlbench.analysis.scores against references: thuml/LogME's LogME.py (vendored, tests/reference/), explicit
D x D H-scores as thuml/Transfer-Learning-Library's tllib/ranking/hscore.py computes them, sklearn's
Ledoit-Wolf shrinkage, a brute-force leave-one-out nearest centroid; and the D >> N memory bound."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from reference.logme_reference import LogME
from sklearn.covariance import LedoitWolf, ledoit_wolf_shrinkage
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from tlbench.analysis.scores import FeatureStats, h_score, logme, nearest_centroid_accuracy, score_all


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """One BLAS thread: on a machine busy with other work, OpenBLAS's threaded LAPACK (the references' SVDs,
    the scores' eigensolvers) runs up to 10x slower than on one thread (measured: 52 s for this file, 9 s)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits as loaded (pixel counts 0..16, three all-zero columns: rank-deficient), 1797 x 64."""
    x, y = load_digits(return_X_y=True)
    return x, y


def projected(x: np.ndarray, rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """The first `rows` digits through a Gaussian random projection to `dim` columns (D > N when dim > rows)."""
    return x[:rows] @ np.random.default_rng(seed).standard_normal((x.shape[1], dim)) / np.sqrt(dim)


def reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    return float(LogME(regression=False).fit(f.astype(np.float64), y))


def explicit_h_score(f: np.ndarray, y: np.ndarray, shrinkage: bool, rcond: float | None = None) -> float:
    """tllib/ranking/hscore.py `h_score` / `regularized_h_score`, D x D (only rcond is a parameter here)."""
    f = f.astype(np.float64)
    g = np.zeros_like(f)
    if shrinkage:
        f = f - f.mean(axis=0, keepdims=True)
        cov = LedoitWolf(assume_centered=False).fit(f)
        covf, scale = cov.covariance_, 1 - cov.shrinkage_
    else:
        covf, scale = np.cov(f, rowvar=False), 1.0
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(axis=0)
    covg = np.cov(g, rowvar=False)
    rcond = 1e-15 if rcond is None else rcond
    return float(np.trace(np.linalg.pinv(covf, rcond=rcond) @ (scale * covg)))


def brute_force_nearest_centroid(f: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out nearest class mean by recomputing every mean without each row."""
    f = f.astype(np.float64)
    classes = np.unique(y)
    correct = 0
    for i in range(len(f)):
        keep = np.arange(len(f)) != i
        best, best_dist = None, np.inf
        for c in classes:  # ascending: a tie keeps the lower class
            rows = keep & (y == c)
            if not rows.any():
                continue
            dist = np.sum((f[i] - f[rows].mean(axis=0)) ** 2)
            if dist < best_dist:
                best, best_dist = c, dist
        correct += best == y[i]
    return correct / len(f)


# --- LogME --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["digits N>D", "digits standardized N>D", "digits 60x500 D>N", "digits 200x1000 D>N low rank", "random N=D"],
)
def test_logme_equals_reference(raw_digits, case):
    x, y = raw_digits
    rng = np.random.default_rng(1)
    f, labels = {
        "digits N>D": (x, y),
        "digits standardized N>D": ((x - x.mean(0)) / np.maximum(x.std(0), 1e-12), y),
        "digits 60x500 D>N": (projected(x, 60, 500), y[:60]),
        "digits 200x1000 D>N low rank": (projected(x, 200, 1000), y[:200]),
        "random N=D": (rng.standard_normal((80, 80)), rng.integers(0, 5, 80)),
    }[case]
    expected = reference_logme(f, labels)
    # The 200x1000 projection has rank 61 < N: its 139 zero eigenvalues come out as round-off of different
    # size from svd(F) there and eigh(F Fᵀ) here; each enters log(alpha + beta·sigma), hence 1e-8.
    rtol = 1e-8 if "low rank" in case else 1e-10
    assert logme(f, labels) == pytest.approx(expected, rel=rtol)
    assert logme(f.astype(np.float32), labels) == pytest.approx(reference_logme(f.astype(np.float32), labels), rel=rtol)


def test_corrected_logme_counts_every_zero_eigenvalue(raw_digits):
    x, y = raw_digits
    f, labels = projected(x, 60, 50, seed=8), y[:60]  # N > D: the published number is the exact evidence
    wide = np.hstack([f, np.zeros((60, 250))])  # D = 300 > N: the published code leaves 240 log(alpha) out
    reference = LogME(regression=False)
    published = reference.fit(wide, labels)
    missing = (300 - 60) / 2 * np.mean(np.log(reference.alphas)) / 60  # per image, averaged over classes
    assert logme(wide, labels) == pytest.approx(published, rel=1e-10)
    assert logme(wide, labels, corrected=True) == pytest.approx(published - missing, rel=1e-9)
    # Zero columns change nothing in the evidence: the corrected D > N number is the N > D one.
    assert logme(wide, labels, corrected=True) == pytest.approx(reference_logme(f, labels), rel=1e-9)
    assert logme(f, labels, corrected=True) == logme(f, labels)
    assert score_all(wide, labels, logme_corrected=True)["logme"] == logme(wide, labels, corrected=True)


def test_logme_of_int8_features_equals_reference():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 300)
    f = np.clip(np.round(rng.standard_normal((300, 40)) + y[:, None] * 0.3), -1, 1).astype(np.int8)
    assert logme(f, y) == pytest.approx(reference_logme(f, y), rel=1e-10)
    wide = np.clip(np.round(rng.standard_normal((100, 700)) + y[:100, None] * 0.3), -1, 1).astype(np.int8)
    assert logme(wide, y[:100]) == pytest.approx(reference_logme(wide, y[:100]), rel=1e-10)


# --- H-score and Ledoit-Wolf ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(400, 64), (60, 500), (200, 1000), (90, 90)])
def test_ledoit_wolf_shrinkage_equals_sklearn(raw_digits, shape):
    x, y = raw_digits
    n, d = shape
    f = x[:n] if d == 64 else projected(x, n, d, seed=3) + 0.01 * np.random.default_rng(3).standard_normal((n, d))
    assert FeatureStats(f, y[:n]).ledoit_wolf_shrinkage() == pytest.approx(ledoit_wolf_shrinkage(f), rel=1e-10)


@pytest.mark.parametrize("shape", [(1797, 64), (300, 64), (60, 500), (120, 600)])
def test_shrinkage_h_score_equals_explicit(raw_digits, shape):
    x, y = raw_digits
    n, d = shape
    f = x[:n] if d == 64 else projected(x, n, d, seed=4)
    expected = explicit_h_score(f, y[:n], shrinkage=True)
    assert h_score(f, y[:n]) == pytest.approx(expected, rel=1e-8)
    assert h_score(f, y[:n], shrinkage=True) == score_all(f, y[:n])["h_score"]


def test_plain_h_score_equals_explicit_pinv(raw_digits):
    x, y = raw_digits
    rng = np.random.default_rng(5)
    # N > D with the three all-zero digit columns (a singular covariance: the pseudo-inverse matters).
    f = x[:500] + 0.0
    assert h_score(f, y[:500], shrinkage=False) == pytest.approx(explicit_h_score(f, y[:500], False), rel=1e-8)
    # D > N of rank 61 < N - 1: the pseudo-inverse with the same cutoff (max(N, D)·eps) as the code.
    f = projected(x, 200, 1000, seed=5)
    expected = explicit_h_score(f, y[:200], shrinkage=False, rcond=1000 * np.finfo(np.float64).eps)
    assert h_score(f, y[:200], shrinkage=False) == pytest.approx(expected, rel=1e-6)
    # D >= N - 1 at full rank: the ill-posed case, C - 1 whatever the features.
    labels = rng.integers(0, 6, 50)
    assert h_score(rng.standard_normal((50, 300)), labels, shrinkage=False) == pytest.approx(5.0, rel=1e-9)


# --- nearest centroid ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(300, 64), (80, 400)])
def test_nearest_centroid_equals_brute_force(raw_digits, shape):
    x, y = raw_digits
    n, d = shape
    f = (x[:n] if d == 64 else projected(x, n, d, seed=6)) + np.random.default_rng(6).normal(0, 3.0, (n, d))
    labels = y[:n].copy()
    labels[labels == 9] = 8
    labels[np.flatnonzero(labels == 8)[1:3]] = 9  # class 9: two rows; each alone in it when left out
    labels[np.flatnonzero(labels == 8)[3]] = 10  # class 10: one row, whose class has no mean for it
    expected = brute_force_nearest_centroid(f, labels)
    assert 0.2 < expected < 1.0  # neither trivial nor perfect
    assert nearest_centroid_accuracy(f, labels) == pytest.approx(expected, abs=1e-12)
    assert nearest_centroid_accuracy(f.astype(np.float32), labels) == brute_force_nearest_centroid(
        f.astype(np.float32), labels
    )


def test_nearest_centroid_ties_go_to_the_lowest_class():
    # Integers with an integer mean, so every distance is exact. Row 2 (at 0, class 2) left out: its class's
    # mean is 4 (squared distance 16), class 0's is -4 (16 too), class 1's 25: a tie, given to class 0.
    f = np.array([[-4.0], [-4.0], [0.0], [4.0], [25.0], [25.0], [25.0], [25.0]])
    labels = np.array([0, 0, 2, 2, 1, 1, 1, 1])
    assert brute_force_nearest_centroid(f, labels) == 7 / 8
    assert nearest_centroid_accuracy(f, labels) == 7 / 8  # D < N
    assert nearest_centroid_accuracy(np.hstack([f, np.zeros((8, 9))]), labels) == 7 / 8  # D >= N
    assert nearest_centroid_accuracy(f, np.array([1, 1, 0, 0, 2, 2, 2, 2])) == 1.0  # row 2's class now lowest


# --- labels, input checks ---------------------------------------------------------------------------------


def test_labels_that_are_not_0_to_c_minus_1_give_the_remapped_scores(raw_digits):
    x, y = raw_digits
    for f, labels in [(x[:300], y[:300] % 3), (projected(x, 60, 500), y[:60] % 3)]:
        odd = np.array([3, 7, 9])[labels]
        assert score_all(f, odd) == score_all(f, labels)
        assert h_score(f, odd, shrinkage=False) == h_score(f, labels, shrinkage=False)
        # The reference would count the empty classes 0..2, 4..6, 8 as classes: compare on the remapped ones.
        assert logme(f, odd) == pytest.approx(reference_logme(f, labels), rel=1e-10)


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.ones((10, 3)), np.zeros(10, dtype=int), "at least 2 classes"),
        (np.ones((10, 3)), np.arange(9) % 2, "10 feature rows but 9 labels"),
        (np.ones(10), np.arange(10) % 2, "2-D"),
        (np.ones((10, 0)), np.arange(10) % 2, "2-D"),
        (np.ones((10, 3)), (np.arange(10) % 2).astype(float), "integer"),
        (np.array([[np.nan, 1.0]] * 10), np.arange(10) % 2, "NaN or inf"),
        (np.array([[np.inf, 1.0]] * 10), np.arange(10) % 2, "NaN or inf"),
        (np.where(np.eye(4, 30) > 0, np.nan, 1.0), np.arange(4) % 2, "NaN or inf"),  # D > N
        (np.ones((10, 3), dtype=complex), np.arange(10) % 2, "float or integer"),
    ],
)
def test_bad_input_is_refused(features, labels, message):
    for fn in (logme, h_score, nearest_centroid_accuracy, score_all):
        with pytest.raises(ValueError, match=message):
            fn(features, labels)


# --- D >> N: no D x D matrix -------------------------------------------------------------------------------


def test_scores_of_a_wide_float32_embedding_never_allocate_d_by_d():
    n, d = 2000, 19_200
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, n)
    features = rng.standard_normal((n, d), dtype=np.float32)
    features[:, :50] += labels[:, None].astype(np.float32)  # some signal
    tracemalloc.start()
    try:
        stats = FeatureStats(features, labels)
        scores = {
            "logme": stats.logme(),
            "h_score": stats.h_score(),
            "plain": stats.h_score(shrinkage=False),
            "nearest_centroid": stats.nearest_centroid_accuracy(),
        }
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(np.isfinite(v) for v in scores.values())
    assert scores["plain"] == pytest.approx(9.0)  # rank N - 1: the ill-posed plain score is C - 1
    assert scores["nearest_centroid"] > 0.5
    # One D x D float64 matrix would be 2.9 GB; the N x N ones are 32 MB each (measured peak: 0.16 GB).
    assert peak < 0.6e9, f"peak traced memory {peak / 1e9:.2f} GB"


def test_integer_cross_products_in_float32_equal_float64():
    """FNE inputs ({-1, 0, 1} int8) take the float32 cross-product path: bit-identical to float64."""
    from tlbench.analysis.scores import _exact_in_float32

    rng = np.random.default_rng(0)
    labels = np.arange(300) % 4
    for d in (50, 400):  # the cov side (D < N) and the Gram side (D >= N)
        x = rng.integers(-1, 2, size=(300, d)).astype(np.int8)
        fast, slow = FeatureStats(x, labels), FeatureStats(x.astype(np.float64), labels)
        assert fast.side == slow.side
        np.testing.assert_array_equal(fast.cross, slow.cross)
        assert fast.logme(corrected=True) == pytest.approx(slow.logme(corrected=True), rel=1e-12)
    big = np.full((2000, 5), 127, dtype=np.int8)  # 2,000 * 127**2 > 2**24: float64
    assert _exact_in_float32(big[:1000], terms=1000) and not _exact_in_float32(big, terms=2000)
