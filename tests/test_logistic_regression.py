"""The torch logistic-regression backend against scikit-learn's LogisticRegression (lbfgs, the
reference), C=auto through the shared cross-validation, and classifier=logistic_regression end to end."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import colour_folder, read_json, run_cli
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from tlbench.classifiers import LogisticRegression
from tlbench.classifiers.torch_logistic import TorchSoftmaxRegression, softmax_objective
from tlbench.cli import config_dir


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_multinomial_optimum_matches_sklearn(digits, C):
    x, y = digits
    reference = SkLogisticRegression(C=C, tol=1e-10, max_iter=20_000).fit(x, y)
    ours = TorchSoftmaxRegression(C=C, tol=1e-7, max_iter=5000).fit(x, y)
    theirs = softmax_objective(x, y, reference.coef_, reference.intercept_, C)
    mine = softmax_objective(x, y, ours.coef_, ours.intercept_, C)
    assert mine == pytest.approx(theirs, rel=1e-6)  # the same optimum of the same objective
    assert ours.info["objective"] == pytest.approx(mine, rel=1e-5)  # and it reports it
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-2 * np.abs(reference.coef_).max())
    # the intercept is unregularised, so softmax fixes it up to a constant: compare centred
    np.testing.assert_allclose(
        ours.intercept_ - ours.intercept_.mean(), reference.intercept_ - reference.intercept_.mean(), atol=1e-2
    )
    assert (ours.predict(x) == reference.predict(x)).mean() >= 0.995


def test_two_classes_are_plain_logistic_regression(digits):
    x, y = digits
    keep = y < 2
    reference = SkLogisticRegression(C=0.1, tol=1e-10, max_iter=20_000).fit(x[keep], y[keep])
    ours = TorchSoftmaxRegression(C=0.1, tol=1e-7).fit(x[keep], y[keep])
    assert ours.coef_.shape == reference.coef_.shape == (1, 64)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=1e-3 * np.abs(reference.coef_).max())
    np.testing.assert_allclose(ours.intercept_, reference.intercept_, atol=1e-3)


def test_int8_features_match_their_float_copy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 600)
    x = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(600, 300))
    x[np.arange(600), labels] = 1
    ours = TorchSoftmaxRegression(C=0.1, tol=1e-6).fit(x, labels)
    as_float = TorchSoftmaxRegression(C=0.1, tol=1e-6).fit(x.astype(np.float32), labels)
    np.testing.assert_allclose(ours.coef_, as_float.coef_, rtol=1e-4, atol=1e-5)


def test_c_auto_picks_the_best_grid_value():
    """The SVM's C=auto problem: 30 % label noise, 60 noise dimensions. The choice is the grid's best
    mean and the means are those of an independent scikit-learn cross-validation."""
    rng = np.random.default_rng(0)
    n, signal = 300, rng.normal(0, 1, (300, 2))
    labels = (signal[:, 0] + signal[:, 1] > 0).astype(int)
    flip = rng.random(n) < 0.3
    labels[flip] = 1 - labels[flip]
    x = np.hstack([signal, rng.normal(0, 1, (n, 60))]).astype(np.float32)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    model = LogisticRegression(C="auto", c_grid=grid, cv_folds=5, metric="top1").fit(x, labels)
    record = model.describe()
    assert record["type"] == "logistic_regression" and record["converged"]
    means = {row["C"]: row["mean"] for row in record["C_selection"]["grid"]}
    assert sorted(means) == grid and len(set(means.values())) > 1
    assert record["C"] == max(grid, key=lambda c: (means[c], -c))  # the best mean (smallest C on ties)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    for c in grid:
        independent = cross_val_score(SkLogisticRegression(C=c, max_iter=10_000), x, labels, cv=folds).mean()
        assert means[c] == pytest.approx(independent, abs=0.01)


def test_config_builds_it_with_the_dataset_metric():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["classifier=logistic_regression", "classifier.C=auto"])
    model = instantiate(cfg.classifier, metric="mean_per_class")
    assert isinstance(model, LogisticRegression)
    assert (model.C, model.metric, model.cv_folds, model.random_state) == ("auto", "mean_per_class", 5, 0)


def test_cli_run_records_the_classifier(tmp_path):
    root = colour_folder(tmp_path / "folder", train=6, test=3)
    run_cli(
        tmp_path,
        "dataset=imagefolder",
        f"dataset.root={root}",
        "model=timm",
        "model.name=resnet18",
        "model.pretrained=false",
        "strategy=last_layer",
        "classifier=logistic_regression",
        "classifier.C=auto",
        "classifier.cv_folds=3",
    )
    result = read_json(tmp_path / "run" / "results.json")
    record = result["classifier"]
    assert record["type"] == "logistic_regression"
    assert record["C"] in [row["C"] for row in record["C_selection"]["grid"]]
    assert all(len(row["scores"]) == 3 for row in record["C_selection"]["grid"])
    assert 0 <= result["metrics"]["test"]["top1"] <= 1
