"""tlbench.stats against scipy (McNemar as a binomial test, ttest_rel, wilcoxon, t.interval) and
tlbench.metrics, independent re-derivations of the effect sizes, and the coverage of each interval
on simulated problems whose true accuracy (or difference) is known."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import stats as sps

from tlbench import stats
from tlbench.metrics import classification_metrics

# ---------------------------------------------------------------- metric_value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_value_matches_classification_metrics(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    labels = rng.integers(0, num_classes - 1, size=300)  # the last class is absent: it must be ignored
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, num_classes, size=300))
    expected = classification_metrics(labels, predictions, num_classes)
    for metric in ("top1", "mean_per_class"):
        assert stats.metric_value(labels, predictions, metric, num_classes) == pytest.approx(expected[metric], abs=1e-6)
    assert stats.metric_value(labels, predictions, "top1", num_classes) != pytest.approx(expected["mean_per_class"])


def test_metric_value_refuses_unknown_metric_and_bad_input():
    with pytest.raises(ValueError, match="unknown metric 'top5'"):
        stats.metric_value([0, 1], [0, 1], "top5", 2)
    with pytest.raises(ValueError, match="differ in length"):
        stats.metric_value([0, 1], [0], "top1", 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        stats.metric_value([0, 2], [0, 2], "mean_per_class", 2)


# ---------------------------------------------------------------- McNemar

# (both right, a only, b only, both wrong)
TABLES = [(50, 10, 3, 7), (20, 0, 9, 1), (5, 12, 12, 4), (100, 1, 0, 0), (30, 25, 5, 10), (0, 40, 41, 0)]


def images_from_table(both: int, a_only: int, b_only: int, neither: int, seed: int = 0):
    """Labels and two prediction vectors with exactly this 2x2 table of right/wrong, shuffled."""
    n = both + a_only + b_only + neither
    labels = np.random.default_rng(seed).integers(0, 5, size=n)
    right_a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    right_b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    order = np.random.default_rng(seed + 1).permutation(n)
    labels, right_a, right_b = labels, right_a[order], right_b[order]
    wrong = (labels + 1) % 5
    return labels, np.where(right_a, labels, wrong), np.where(right_b, labels, (labels + 2) % 5)


@pytest.mark.parametrize("table", TABLES)
def test_mcnemar_exact_matches_binomtest(table):
    labels, a, b = images_from_table(*table)
    result = stats.mcnemar_exact(labels, a, b)
    assert (result["a_only"], result["b_only"]) == (table[1], table[2])
    expected = sps.binomtest(table[1], table[1] + table[2], 0.5, alternative="two-sided").pvalue
    assert result["p_value"] == pytest.approx(expected, rel=1e-9)
    assert 0.0 <= result["p_value"] <= 1.0
    assert "McNemar" in result["method"]


def test_mcnemar_without_discordant_pairs_is_p_one():
    labels = np.array([0, 1, 2, 3, 1])
    same = np.array([0, 1, 0, 0, 1])  # both right on 3 images, both wrong on 2: no discordant pair
    result = stats.mcnemar_exact(labels, same, same.copy())
    assert result == {**result, "a_only": 0, "b_only": 0, "p_value": 1.0}


# ---------------------------------------------------------------- paired_test

PAIRS = [
    ([0.81, 0.84, 0.79, 0.86, 0.83], [0.80, 0.80, 0.78, 0.83, 0.84]),
    ([0.5, 0.6, 0.7, 0.9, 0.65, 0.72, 0.61, 0.58], [0.52, 0.55, 0.61, 0.82, 0.60, 0.70, 0.66, 0.50]),
    ([1.0, 2.0, 3.5], [1.5, 2.25, 3.0]),
]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_paired_t_matches_ttest_rel_and_d_z(a, b):
    result = stats.paired_test(a, b, test="t")
    reference = sps.ttest_rel(a, b)
    d = np.subtract(a, b)
    assert result["n"] == len(a)
    assert result["statistic"] == pytest.approx(reference.statistic, rel=1e-9)
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert result["mean_difference"] == pytest.approx(d.mean(), rel=1e-12)
    assert result["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-9)
    assert result["effect_size_name"] == "Cohen's d_z"
    low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert (result["low"], result["high"]) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def rank_biserial_by_hand(d) -> float:
    """Kerby 2014 from first principles: average ranks of |d| over the non-zero differences by
    counting, then (favourable rank sum - unfavourable rank sum) / n(n+1)/2."""
    d = [x for x in d if x != 0]
    n = len(d)
    ranks = []
    for x in d:
        below = sum(abs(y) < abs(x) for y in d)
        ties = sum(abs(y) == abs(x) for y in d)
        ranks.append(below + (ties + 1) / 2)
    plus = sum(r for r, x in zip(ranks, d) if x > 0)
    minus = sum(r for r, x in zip(ranks, d) if x < 0)
    return (plus - minus) / (n * (n + 1) / 2)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        *PAIRS,
        ([3.0, 1.0, 4.0, 1.0, 5.0, 9.0], [2.0, 1.0, 3.0, 2.0, 3.0, 7.0]),  # a zero and tied |d|
        (list(np.random.default_rng(3).normal(0.1, 1, 30)), list(np.random.default_rng(4).normal(0, 1, 30))),
    ],
)
def test_wilcoxon_matches_scipy_and_rank_biserial(a, b):
    result = stats.paired_test(a, b, test="wilcoxon")
    reference = sps.wilcoxon(np.subtract(a, b))
    assert result["statistic"] == pytest.approx(reference.statistic, rel=1e-9)
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert result["effect_size"] == pytest.approx(rank_biserial_by_hand(np.subtract(a, b)), rel=1e-9)
    assert result["effect_size_name"] == "rank-biserial r"
    assert -1.0 <= result["effect_size"] <= 1.0


def test_wilcoxon_all_one_way_has_r_one():
    result = stats.paired_test([2.0, 3.0, 5.0, 7.0], [1.0, 1.0, 1.0, 1.0], test="wilcoxon")
    assert result["effect_size"] == pytest.approx(1.0)
    assert result["p_value"] == pytest.approx(sps.wilcoxon([1.0, 2.0, 4.0, 6.0]).pvalue)


@pytest.mark.parametrize("test", ["t", "wilcoxon"])
def test_paired_test_degenerate_cases(test):
    one = stats.paired_test([0.8], [0.7], test=test)
    assert one["n"] == 1 and one["p_value"] is None and one["low"] is None and one["high"] is None
    assert one["mean_difference"] == pytest.approx(0.1)
    assert "n >= 2" in one["method"]

    same = stats.paired_test([0.8, 0.7, 0.9], [0.8, 0.7, 0.9], test=test)
    assert same["p_value"] == 1.0 and same["effect_size"] == 0.0 and same["mean_difference"] == 0.0
    assert same["low"] == same["high"] == 0.0
    assert "zero" in same["method"]

    with pytest.raises(ValueError, match=r"a has 3 values, b has 2"):
        stats.paired_test([1.0, 2.0, 3.0], [1.0, 2.0], test=test)


def test_paired_t_with_equal_nonzero_differences_is_not_nan():
    result = stats.paired_test([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], test="t")  # d = 0.1 each, up to the last bit
    assert result["p_value"] is None and result["effect_size"] is None
    assert result["mean_difference"] == pytest.approx(0.1)
    assert "zero variance" in result["method"]


def test_paired_test_refuses_unknown_test():
    with pytest.raises(ValueError, match="unknown test"):
        stats.paired_test([1.0, 2.0], [1.0, 2.0], test="sign")


# ---------------------------------------------------------------- mean_interval


@pytest.mark.parametrize("values", [[0.8, 0.82, 0.87], [1.0, 3.0], list(np.linspace(0.1, 0.9, 11))])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_matches_t_interval(values, confidence):
    x = np.asarray(values)
    result = stats.mean_interval(values, confidence)
    low, high = sps.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert result["low"] == pytest.approx(low, rel=1e-10) and result["high"] == pytest.approx(high, rel=1e-10)
    assert result["mean"] == pytest.approx(x.mean()) and result["std"] == pytest.approx(x.std(ddof=1))
    assert result["n"] == len(x)
    assert result["method"] == f"Student t over {len(x)} repeats, {100 * confidence:g}%"


def test_mean_interval_single_and_equal_values():
    single = stats.mean_interval([0.7])
    assert single["low"] is None and single["high"] is None and single["mean"] == 0.7 and single["n"] == 1
    assert "single value" in single["method"]
    equal = stats.mean_interval([0.7, 0.7, 0.7])
    assert equal["low"] == equal["high"] == pytest.approx(0.7) and equal["std"] == 0.0
    with pytest.raises(ValueError):
        stats.mean_interval([])


# ---------------------------------------------------------------- coverage on simulated problems


def test_mean_interval_covers_the_true_mean():
    rng = np.random.default_rng(11)
    true_mean, repetitions = 0.73, 2000
    draws = rng.normal(true_mean, 0.05, size=(repetitions, 5))
    covered = 0
    for row in draws:
        result = stats.mean_interval(row)
        covered += result["low"] <= true_mean <= result["high"]
    assert 0.92 <= covered / repetitions <= 0.98


def test_bootstrap_interval_covers_the_true_accuracy():
    """Each prediction right with probability p = 0.8, N = 400 images: the true top-1 is p."""
    rng = np.random.default_rng(12)
    p, n, repetitions = 0.8, 400, 300
    covered = 0
    for rep in range(repetitions):
        labels = rng.integers(0, 10, size=n)
        predictions = np.where(rng.random(n) < p, labels, (labels + 1) % 10)
        result = stats.bootstrap_interval(labels, predictions, "top1", 10, resamples=1000, seed=rep)
        assert result["low"] <= result["value"] <= result["high"]
        covered += result["low"] <= p <= result["high"]
    assert 0.90 <= covered / repetitions <= 0.985


def test_bootstrap_interval_covers_the_true_mean_per_class():
    """4 classes with accuracies 0.9, 0.8, 0.7, 0.5 and unequal frequencies: the true mean per-class
    accuracy is their plain mean, which top-1 (frequency-weighted) would miss."""
    rng = np.random.default_rng(13)
    accuracy = np.array([0.9, 0.8, 0.7, 0.5])
    frequency = np.array([0.4, 0.3, 0.2, 0.1])
    n, repetitions = 600, 200
    covered = 0
    for rep in range(repetitions):
        labels = rng.choice(4, size=n, p=frequency)
        predictions = np.where(rng.random(n) < accuracy[labels], labels, (labels + 1) % 4)
        result = stats.bootstrap_interval(labels, predictions, "mean_per_class", 4, resamples=500, seed=rep)
        covered += result["low"] <= accuracy.mean() <= result["high"]
    assert 0.88 <= covered / repetitions <= 0.99


def test_paired_bootstrap_covers_the_true_difference():
    """Per image: both right 0.70, only A 0.10, only B 0.05, neither 0.15, so top-1 of A is 0.80, of
    B 0.75 and the true difference 0.05; the two methods' errors are correlated, as on real data."""
    rng = np.random.default_rng(14)
    cells = np.array([0.70, 0.10, 0.05, 0.15])
    n, repetitions, truth = 400, 300, 0.05
    covered = 0
    for rep in range(repetitions):
        labels = rng.integers(0, 10, size=n)
        kind = rng.choice(4, size=n, p=cells)
        a = np.where((kind == 0) | (kind == 1), labels, (labels + 1) % 10)
        b = np.where((kind == 0) | (kind == 2), labels, (labels + 2) % 10)
        result = stats.paired_bootstrap(labels, a, b, "top1", 10, resamples=1000, seed=rep)
        assert result["difference"] == pytest.approx(np.mean(a == labels) - np.mean(b == labels))
        covered += result["low"] <= truth <= result["high"]
    assert 0.90 <= covered / repetitions <= 0.985


# ---------------------------------------------------------------- bootstrap mechanics


@pytest.mark.parametrize("metric", ["top1", "mean_per_class"])
def test_bootstrap_chunking_gives_the_single_chunk_result(metric, monkeypatch):
    rng = np.random.default_rng(5)
    n = 301  # odd, so chunks of rows do not align with any word boundary of the generator
    labels = rng.integers(0, 6, size=n)
    a = np.where(rng.random(n) < 0.7, labels, 0)
    b = np.where(rng.random(n) < 0.6, labels, 1)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 10**9)
    whole = stats.bootstrap_interval(labels, a, metric, 6, resamples=257, seed=3)
    whole_paired = stats.paired_bootstrap(labels, a, b, metric, 6, resamples=257, seed=3)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 7 * n)  # 7 resamples a chunk, the last one short
    assert stats._chunk_rows(n) == 7
    assert stats.bootstrap_interval(labels, a, metric, 6, resamples=257, seed=3) == whole
    assert stats.paired_bootstrap(labels, a, b, metric, 6, resamples=257, seed=3) == whole_paired
    other_seed = stats.bootstrap_interval(labels, a, metric, 6, resamples=257, seed=4)
    assert (other_seed["low"], other_seed["high"]) != (whole["low"], whole["high"])


def test_bootstrap_resamples_match_a_direct_loop():
    """The vectorized per-class counts against metric_value on each resample, drawn the same way."""
    rng = np.random.default_rng(6)
    n, resamples = 50, 40
    labels = rng.integers(0, 8, size=n)  # some classes absent from some resamples
    predictions = np.where(rng.random(n) < 0.6, labels, 0)
    draw = np.random.default_rng(9)
    idx = draw.integers(0, n, size=(resamples, n))
    for metric in ("top1", "mean_per_class"):
        direct = [stats.metric_value(labels[i], predictions[i], metric, 8) for i in idx]
        got = stats._resampled_metrics(labels, [labels == predictions], metric, 8, resamples, seed=9)[0]
        np.testing.assert_allclose(got, direct, rtol=1e-12)
        result = stats.bootstrap_interval(labels, predictions, metric, 8, resamples=resamples, seed=9)
        assert (result["low"], result["high"]) == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])))
        assert result["method"] == f"percentile bootstrap over the {n} test images, {resamples} resamples, 95%"


def test_paired_bootstrap_of_identical_predictions_is_zero():
    labels = np.arange(100) % 5
    predictions = np.where(np.arange(100) % 3 == 0, 0, labels)
    result = stats.paired_bootstrap(labels, predictions, predictions, "mean_per_class", 5, resamples=200)
    assert result["difference"] == result["low"] == result["high"] == 0.0


def test_bootstrap_memory_stays_bounded_for_a_large_test_set():
    """N = 25,000 images: a single (R, N) int64 index matrix of 1,000 resamples is 200 MB alone."""
    rng = np.random.default_rng(7)
    n = 25_000
    labels = rng.integers(0, 397, size=n)
    a = np.where(rng.random(n) < 0.6, labels, 0)
    b = np.where(rng.random(n) < 0.55, labels, 0)
    tracemalloc.start()
    try:
        stats.paired_bootstrap(labels, a, b, "mean_per_class", 397, resamples=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20
