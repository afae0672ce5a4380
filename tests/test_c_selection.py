"""C=auto on folds the caller gives (c_selection=validation: C scored on a validation split, then the
model refit on train + val, as Kornblith et al. 2019): the grid's scores are those of fitting each C
on the train rows by hand and scoring the val rows, the refit is a fit on all rows at the chosen C."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tlbench.classifiers import LinearSVM, LogisticRegression
from tlbench.cli import config_dir
from tlbench.metrics import classification_metrics

GRID = [1e-4, 1e-2, 1.0, 100.0]


def noisy_problem(noise_dims: int, n: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """Two classes from 2 signal dimensions, 30 % of labels flipped, plus noise dimensions: the grid
    values score differently (the C=auto tests' problem)."""
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 1, (n, 2))
    labels = (signal[:, 0] + signal[:, 1] > 0).astype(int)
    flip = rng.random(n) < 0.3
    labels[flip] = 1 - labels[flip]
    return np.hstack([signal, rng.normal(0, 1, (n, noise_dims))]).astype(np.float32), labels


CASES = {
    "svm-sklearn": (lambda **kw: LinearSVM(backend="sklearn", **kw), 60),
    "svm-torch": (lambda **kw: LinearSVM(backend="torch", tol=1e-6, **kw), 60),
    # D > N: kernel space (default tol: at 1e-6 the float32 Gram matrix stalls Newton at C >= 1)
    "svm-torch-kernel": (lambda **kw: LinearSVM(backend="torch", **kw), 400),
    "logistic": (lambda **kw: LogisticRegression(tol=1e-6, **kw), 60),
}


@pytest.mark.parametrize("case", CASES)
def test_given_validation_fold_scores_the_grid_and_the_refit_uses_all_rows(case):
    build, noise_dims = CASES[case]
    x, labels = noisy_problem(noise_dims)
    order = np.random.default_rng(1).permutation(300)
    train, val = np.sort(order[:240]), np.sort(order[240:])
    test = np.arange(300, 360)  # never seen by the selection or the refit
    rows = np.arange(300)

    model = build(C="auto", c_grid=GRID, c_selection="validation").fit(x[rows], labels[rows], folds=[(train, val)])
    record = model.describe()
    selection = record["C_selection"]
    assert selection["c_selection"] == "validation"
    assert selection["folds"] == "given: 1 fold, 240 train / 60 validation rows"
    if case == "svm-torch-kernel":
        assert selection["solver"].startswith("kernel Newton")

    by_hand = {}
    for c in GRID:
        predicted = build(C=c).fit(x[train], labels[train]).predict(x[val])
        by_hand[c] = classification_metrics(labels[val], predicted, 2)["top1"]
    assert {row["C"]: row["scores"] for row in selection["grid"]} == {c: [s] for c, s in by_hand.items()}
    assert len(set(by_hand.values())) > 1  # the grid values do differ on this problem
    assert record["C"] == max(GRID, key=lambda c: (by_hand[c], -c))  # the best score, the smallest C on ties

    refit = build(C=record["C"]).fit(x[rows], labels[rows])  # train + val
    assert (model.predict(x[test]) == refit.predict(x[test])).all()
    ours, theirs = model.model.coef_, refit.model.coef_
    if case in ("svm-sklearn", "logistic"):  # the same fit from the same start
        np.testing.assert_array_equal(ours, theirs)
    else:  # started elsewhere (the kernel solution, a warm start), stopped within the tolerance
        np.testing.assert_allclose(ours, theirs, atol=1e-3 * np.abs(theirs).max())


def test_given_folds_replace_the_stratified_k_fold():
    x, labels = noisy_problem(60)
    folds = [(np.arange(0, 200), np.arange(200, 300)), (np.arange(100, 300), np.arange(0, 100))]
    model = LogisticRegression(C="auto", c_grid=GRID).fit(x[:300], labels[:300], folds=folds)
    selection = model.describe()["C_selection"]
    assert selection["c_selection"] == "kfold"
    assert selection["folds"] == "given: 2 folds, train/held-out rows 200/100, 200/100"
    assert all(len(row["scores"]) == 2 for row in selection["grid"])
    default = LogisticRegression(C="auto", c_grid=GRID, cv_folds=3).fit(x[:300], labels[:300])
    assert default.describe()["C_selection"]["folds"] == "stratified 3-fold"


@pytest.mark.parametrize("cls", [LinearSVM, LogisticRegression])
def test_c_selection_errors(cls):
    x, labels = noisy_problem(10, n=40)
    fold = [(np.arange(30), np.arange(30, 40))]
    with pytest.raises(ValueError, match="c_selection must be one of kfold, validation, got 'holdout'"):
        cls(C="auto", c_selection="holdout")
    with pytest.raises(ValueError, match="c_selection=validation chooses C on a validation split: it needs"):
        cls(C=1.0, c_selection="validation")
    with pytest.raises(ValueError, match=r"folds=\[\(train_rows, val_rows\)\]"):
        cls(C="auto", c_selection="validation").fit(x, labels)
    with pytest.raises(ValueError, match=r"classifier\.C=1\.0 is fixed"):
        cls(C=1.0).fit(x, labels, folds=fold)
    with pytest.raises(ValueError, match="5 rows are both train and held-out rows"):
        cls(C="auto").fit(x, labels, folds=[(np.arange(35), np.arange(30, 40))])
    with pytest.raises(ValueError, match=r"held-out rows must be non-empty indices in \[0, 40\)"):
        cls(C="auto").fit(x, labels, folds=[(np.arange(30), np.arange(30, 41))])
    with pytest.raises(ValueError, match="train rows must be a 1-d array of row indices"):
        cls(C="auto").fit(x, labels, folds=[(np.arange(40) < 30, np.arange(30, 40))])


@pytest.mark.parametrize("name", ["linear_svm", "logistic_regression"])
def test_config_key_c_selection(name):
    def build(*overrides: str) -> object:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"classifier={name}", *overrides])
        return instantiate(cfg.classifier, metric="top1")

    assert build().c_selection == "kfold"
    assert build("classifier.C=auto", "classifier.c_selection=validation").c_selection == "validation"
    with pytest.raises(Exception, match=r"needs classifier\.C=auto"):
        build("classifier.c_selection=validation")  # C stays 1.0
