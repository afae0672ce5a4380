"""The weighted k-NN probe (tlbench/classifiers/knn.py, DINO eval_knn.py knn_classifier) against a plain
numpy computation, its tie and clamping rules, chunking, int8 inputs, leave-one-out, arbitrary label
values, and classifier=knn through the config and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import colour_folder, read_json, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tlbench.classifiers import KNN
from tlbench.classifiers.knn import knn_predict, leave_one_out_knn_accuracy, nearest, query_rows
from tlbench.cli import config_dir

SMALL = ["model.data_config.input_size=[3,64,64]", "dataset.num_workers=0", "dataset.batch_size=8"]


def reference(
    train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, T: float, exclude_self: bool = False
) -> np.ndarray:
    """The rule written out in float64 numpy: full similarity matrix, a stable argsort (equal values:
    lower train index first), exp(s / T) summed per class in train-index order, np.argmax (the first
    maximum: the lower class index)."""
    tr = train.astype(np.float64)
    tr /= np.maximum(np.linalg.norm(tr, axis=1, keepdims=True), 1e-12)
    q = queries.astype(np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    s = q @ tr.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    k = min(k, len(train) - exclude_self)
    out = []
    for row in s:
        votes = np.zeros(int(labels.max()) + 1)
        for j in sorted(np.argsort(-row, kind="stable")[:k]):
            votes[labels[j]] += np.exp(row[j] / T)
        out.append(int(np.argmax(votes)))
    return np.array(out)


def ternary(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 {-1, 0, 1} rows around a prototype per class: FNE-like, with many exactly equal similarities."""
    rng = np.random.default_rng(seed)
    prototypes = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(classes, d))
    labels = rng.integers(0, classes, n)
    x = prototypes[labels]
    noise = rng.random((n, d)) < 0.8
    x[noise] = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=int(noise.sum()))
    return x, labels


def test_random_features_match_the_explicit_computation():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 40)).astype(np.float32), rng.normal(size=(120, 40)).astype(np.float32)
    labels = rng.integers(0, 6, 300)
    for k, T in ((1, 0.07), (20, 0.07), (50, 0.5)):
        expected = reference(train, labels, test, k, T)
        np.testing.assert_array_equal(knn_predict(train, labels, test, k, T), expected)
    # the test is not vacuous: k and T change the answers
    assert (reference(train, labels, test, 1, 0.07) != reference(train, labels, test, 50, 0.5)).any()


def test_digits_match_the_explicit_computation_and_are_accurate(digits):
    x, y = digits
    train, test = slice(0, 1200), slice(1200, None)
    model = KNN().fit(x[train], y[train])
    predicted = model.predict(x[test])
    np.testing.assert_array_equal(predicted, reference(x[train], y[train], x[test], 20, 0.07))
    assert (predicted == y[test]).mean() > 0.9
    # the raw (unstandardised) load_digits pixels too
    from sklearn.datasets import load_digits

    raw, labels = load_digits(return_X_y=True)
    np.testing.assert_array_equal(
        knn_predict(raw[:1200], labels[:1200], raw[1200:]), reference(raw[:1200], labels[:1200], raw[1200:], 20, 0.07)
    )


def test_ties_at_the_kth_neighbour_go_to_the_lower_train_index():
    # rows 0-3 equal (similarity 0.6 to the query), row 4 the query itself (similarity 1)
    v = np.array([0.6, 0.8], dtype=np.float32)
    train = np.stack([v, v, v, v, [1.0, 0.0]]).astype(np.float32)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    similarity = torch.from_numpy(query @ train.T)
    for k, expected in ((1, [4]), (2, [0, 4]), (3, [0, 1, 4]), (4, [0, 1, 2, 4]), (5, [0, 1, 2, 3, 4])):
        columns, values = nearest(similarity, k)
        assert columns.tolist() == [expected], k
        np.testing.assert_allclose(values.numpy(), similarity.numpy()[:, expected])
    # a near-uniform vote (large T): row 4 (class 0) outweighs any one of rows 0-3, not two of them
    labels = np.array([2, 1, 1, 0, 0])
    assert knn_predict(train, labels, query, k=3, temperature=1e6).tolist() == [0]  # rows 4, 0, 1: one vote each
    # rows 4, 0, 1, 2: class 1 twice. Taking the higher indices (4, 3, 2, 1) would give class 0 two votes
    assert knn_predict(train, labels, query, k=4, temperature=1e6).tolist() == [1]
    # without row 4: k = 1 is row 0's class, k = 2 a tie of classes 2 and 1
    assert knn_predict(train[:4], labels[:4], query, k=1).tolist() == [2]
    assert knn_predict(train[:4], labels[:4], query, k=2).tolist() == [1]
    np.testing.assert_array_equal(knn_predict(train, labels, query, 4, 1e6), reference(train, labels, query, 4, 1e6))
    # many equal rows (where torch.topk picks others than the first): the first k, by index
    assert nearest(torch.zeros(3, 1000), 5)[0].tolist() == [[0, 1, 2, 3, 4]] * 3
    many = np.tile(v, (1000, 1))
    assert knn_predict(many, (np.arange(1000) >= 5).astype(int), query, k=5).tolist() == [0]
    assert knn_predict(many, (np.arange(1000) < 5).astype(int), query, k=5).tolist() == [1]


def test_equal_vote_totals_go_to_the_lower_class_index():
    v = np.array([[0.3, 0.4]], dtype=np.float32)
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    # two equal rows of different classes, the higher class at the lower train index
    train = np.concatenate([v, v])
    assert knn_predict(train, np.array([1, 0]), query, k=2).tolist() == [0]
    assert knn_predict(train, np.array([0, 1]), query, k=2).tolist() == [0]
    # through the classifier, with label values: the smaller value is the lower class index
    assert KNN(k=2).fit(train, np.array([9, 3])).predict(query).tolist() == [3]
    # a tie of sums: two rows each (similarities a, b per class, in another train order)
    w = np.array([[0.3, 0.4], [0.5, 0.1]], dtype=np.float32)
    train = np.concatenate([w[[1]], w[[0]], w[[0]], w[[1]]])
    assert knn_predict(train, np.array([2, 2, 1, 1]), query, k=4).tolist() == [1]


def test_k_above_a_class_size_and_above_the_train_rows():
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(25, 8)).astype(np.float32)
    labels = np.repeat([0, 1, 2, 3], [3, 5, 12, 20])  # k = 10 exceeds classes 0 and 1
    np.testing.assert_array_equal(knn_predict(train, labels, test, 10, 0.07), reference(train, labels, test, 10, 0.07))
    # k above N: clamped, the same as k = N (every row votes)
    clamped = knn_predict(train, labels, test, 1000, 0.07)
    np.testing.assert_array_equal(clamped, knn_predict(train, labels, test, 40, 0.07))
    np.testing.assert_array_equal(clamped, reference(train, labels, test, 40, 0.07))
    model = KNN(k=1000).fit(train, labels)
    np.testing.assert_array_equal(model.predict(test), clamped)
    assert model.describe()["k_used"] == 40 and model.describe()["k"] == 1000


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_tiny_chunks_give_the_same_predictions_as_one(kind):
    if kind == "int8":
        train, labels = ternary(200, 64, 5, seed=3)
        test = ternary(70, 64, 5, seed=4)[0]
    else:
        rng = np.random.default_rng(3)
        train, test = rng.normal(size=(200, 64)).astype(np.float32), rng.normal(size=(70, 64)).astype(np.float32)
        labels = rng.integers(0, 5, 200)
    whole = knn_predict(train, labels, test, 15, 0.07, chunk_rows=10_000, train_chunk_rows=10_000)
    for rows, train_rows in ((1, 1), (7, 13), (64, 3)):
        chunked = knn_predict(train, labels, test, 15, 0.07, chunk_rows=rows, train_chunk_rows=train_rows)
        np.testing.assert_array_equal(chunked, whole)
    # the default chunk keeps the similarity block and the query chunk within 128 MiB
    assert query_rows(25_000, 19_200) * 25_000 * 4 <= 128 * 2**20
    assert query_rows(1_257, 19_200) * 19_200 * 4 <= 128 * 2**20
    assert query_rows(10**9, 4) == 1


def test_int8_features_give_the_same_as_their_float32_copy():
    train, labels = ternary(400, 300, 8, seed=5)
    test = ternary(150, 300, 8, seed=6)[0]
    as_int8 = KNN().fit(train, labels).predict(test)
    as_float = KNN().fit(train.astype(np.float32), labels).predict(test.astype(np.float32))
    np.testing.assert_array_equal(as_int8, as_float)
    # mixed: int8 train, float32 queries
    np.testing.assert_array_equal(KNN().fit(train, labels).predict(test.astype(np.float32)), as_int8)
    assert (as_int8 == ternary(150, 300, 8, seed=6)[1]).mean() < 1  # not trivially separable...
    assert len(np.unique(as_int8)) > 1  # ...nor one class


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_leave_one_out_equals_refitting_without_each_row(kind):
    if kind == "int8":
        x, y = ternary(90, 40, 4, seed=7)
    else:
        rng = np.random.default_rng(7)
        x, y = rng.normal(size=(90, 12)).astype(np.float32), rng.integers(0, 4, 90)
    y = np.array([3, 7, 9, 11])[y]  # label values, not 0..C-1
    for k in (1, 5, 200):  # 200: clamped to the 89 other rows
        loop = [KNN(k=k).fit(np.delete(x, i, 0), np.delete(y, i)).predict(x[i : i + 1])[0] for i in range(len(y))]
        expected = float(np.mean(np.array(loop) == y))
        assert leave_one_out_knn_accuracy(x, y, k=k) == expected
        # the self-exclusion across query chunks: the offset of each chunk counts
        classes, encoded = np.unique(y, return_inverse=True)
        chunked = knn_predict(x, encoded, x, k, 0.07, exclude_self_offset=0, chunk_rows=7, train_chunk_rows=11)
        np.testing.assert_array_equal(classes[chunked], loop)
    if kind == "float":
        _, encoded = np.unique(y, return_inverse=True)
        explicit = reference(x, encoded, x, 5, 0.07, exclude_self=True)
        assert leave_one_out_knn_accuracy(x, y, k=5) == float(np.mean(explicit == encoded))
        # a row of its own would always be its own nearest neighbour: excluding it matters
        assert leave_one_out_knn_accuracy(x, y, k=1) < (KNN(k=1).fit(x, y).predict(x) == y).mean() == 1.0


def test_leave_one_out_needs_two_rows_and_the_queries_must_be_train_rows():
    with pytest.raises(ValueError, match="besides the query"):
        leave_one_out_knn_accuracy(np.ones((1, 3), np.float32), np.array([0]))
    with pytest.raises(ValueError, match="not all train rows"):
        knn_predict(np.ones((3, 2)), np.zeros(3, int), np.ones((2, 2)), exclude_self_offset=2)


def test_labels_are_returned_as_given():
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(3, 16)) * 3
    y = rng.integers(0, 3, 150)
    x = (centres[y] + rng.normal(size=(150, 16))).astype(np.float32)
    values = np.array([3, 7, 9])
    model = KNN(k=5).fit(x[:100], values[y[:100]])
    predicted = model.predict(x[100:])
    assert set(np.unique(predicted)) == {3, 7, 9}
    np.testing.assert_array_equal(predicted, values[reference(x[:100], y[:100], x[100:], 5, 0.07)])
    assert (predicted == values[y[100:]]).mean() > 0.9
    names = np.array(["cat", "dog", "eel"])  # any values np.unique sorts: strings too
    strings = KNN(k=5).fit(x[:100], names[y[:100]]).predict(x[100:])
    np.testing.assert_array_equal(strings, names[reference(x[:100], y[:100], x[100:], 5, 0.07)])


def test_bad_settings_are_refused():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"classifier\.k"):
            KNN(k=bad)
    for bad in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"classifier\.temperature"):
            KNN(temperature=bad)


def test_config_builds_it_as_run_does():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["classifier=knn"])
    model = instantiate(cfg.classifier, metric="mean_per_class")  # as tlbench/run.py builds it
    assert isinstance(model, KNN) and model.label == "knn"
    assert (model.k, model.temperature, model.metric, model.random_state) == (20, 0.07, "mean_per_class", 0)
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    record = model.fit(np.eye(3, dtype=np.float32), np.arange(3)).describe()
    assert (record["type"], record["k"], record["temperature"]) == ("knn", 20, 0.07)
    assert record["device"] == str(model.device) and "C" not in record


@pytest.mark.slow
def test_cli_fne_run_with_knn(tmp_path):
    root = colour_folder(tmp_path / "folder", train=6, test=3)
    run_cli(tmp_path, "dataset=imagefolder", f"dataset.root={root}", "strategy=fne", "classifier=knn", *SMALL)
    result = read_json(tmp_path / "run" / "results.json")
    record = result["classifier"]
    assert record["type"] == "knn" and record["k"] == 20 and record["k_used"] == 18  # clamped to 18 train images
    assert record["train_rows"] == 18
    assert result["postprocess"]["dtype"] == "int8"  # the FNE inputs reach it as int8
    assert set(result["metrics"]["test"]) >= {"top1", "mean_per_class"}
    assert result["metrics"]["test"]["top1"] >= 2 / 3  # three colour classes


def test_a_preset_that_pins_a_linear_classifiers_keys_is_refused_by_name(tmp_path):
    """protocol=fne_table sets classifier.C and backend; with classifier=knn that is a ConfigError that
    names the group, the key and where such keys come from, not Hydra's InstantiationException."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tlbench.cli import config_dir
    from tlbench.errors import ConfigError
    from tlbench.run import _build

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["protocol=fne_table", "classifier=knn"])
    with pytest.raises(ConfigError, match=r"classifier: .*unexpected keyword argument .*preset \(protocol=") as info:
        _build(instantiate, "classifier", cfg.classifier, metric="top1")
    assert "--cfg job" in str(info.value)
