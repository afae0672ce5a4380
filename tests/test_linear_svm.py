"""The torch linear-SVM backend against scikit-learn's LinearSVC (the reference), and C=auto."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC

from tlbench.classifiers import LinearSVM
from tlbench.classifiers.kernel_newton import gram_matrix, solve_squared_hinge_kernel
from tlbench.classifiers.torch_svm import TorchSquaredHingeSVM, squared_hinge_objective


@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
def test_objective_matches_liblinear(digits, C):
    x, y = digits
    reference = LinearSVC(C=C, tol=1e-8, max_iter=200_000).fit(x, y)
    ours = TorchSquaredHingeSVM(C=C, tol=1e-6, max_iter=5000).fit(x, y)
    theirs = squared_hinge_objective(x, y, reference.coef_, reference.intercept_, C)
    mine = squared_hinge_objective(x, y, ours.coef_, ours.intercept_, C)
    assert mine == pytest.approx(theirs, rel=1e-5)  # the same optimum of the same objective
    assert ours.info["objective"] == pytest.approx(mine, rel=1e-5)  # and it reports it
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=2e-2 * np.abs(reference.coef_).max())


def test_predictions_agree_on_separable_data():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 5, (4, 20))
    labels = rng.integers(0, 4, 400)
    x = (centers[labels] + rng.normal(0, 0.5, (400, 20))).astype(np.float32)
    ours = TorchSquaredHingeSVM(C=1.0).fit(x, labels)
    reference = LinearSVC(C=1.0).fit(x, labels)
    assert (ours.predict(x) == labels).all()
    assert (ours.predict(x) == reference.predict(x)).all()


def test_int8_ternary_features_are_used_as_they_are():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 600)
    x = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(600, 300))
    x[np.arange(600), labels] = 1
    ours = TorchSquaredHingeSVM(C=0.1).fit(x, labels)
    as_float = TorchSquaredHingeSVM(C=0.1).fit(x.astype(np.float32), labels)
    np.testing.assert_allclose(ours.coef_, as_float.coef_, rtol=1e-4, atol=1e-6)
    reference = LinearSVC(C=0.1, tol=1e-6, max_iter=100_000).fit(x.astype(np.float32), labels)
    assert squared_hinge_objective(x, labels, ours.coef_, ours.intercept_, 0.1) == pytest.approx(
        squared_hinge_objective(x, labels, reference.coef_, reference.intercept_, 0.1), rel=1e-4
    )


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_kernel_solver_matches_liblinear(C):
    """The C=auto solver (kernel space, several problems as columns: two row subsets x 3 classes)
    reaches liblinear's optimum on each problem, large C included, from a warm start as in the grid."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 120)
    x = (rng.normal(0, 1, (3, 300))[labels] + rng.normal(0, 2, (120, 300))).astype(np.float32)
    subsets = [np.arange(120) < 90, np.arange(120) >= 30]  # two overlapping "folds"
    gram = gram_matrix(torch.from_numpy(x), 1.0, torch.device("cpu")).double()
    signs = torch.from_numpy(np.where(labels[:, None] == np.arange(3), 1.0, -1.0))
    signs = torch.cat([signs, signs], dim=1)
    rows = torch.from_numpy(np.repeat(np.stack(subsets, 1), 3, axis=1))
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    warm = solve_squared_hinge_kernel(gram, signs, rows, torch.full((6,), C / 10).double(), group, tol=1e-6)
    result = solve_squared_hinge_kernel(
        gram, signs, rows, torch.full((6,), C).double(), group, tol=1e-6, init=warm.beta
    )
    assert result.converged.all()
    for i, subset in enumerate(subsets):
        beta = result.beta[subset, 3 * i : 3 * i + 3].numpy()
        coef, intercept = beta.T @ x[subset].astype(np.float64), beta.sum(0)
        reference = LinearSVC(C=C, tol=1e-8, max_iter=200_000, dual=True).fit(x[subset], labels[subset])
        theirs = squared_hinge_objective(x[subset], labels[subset], reference.coef_, reference.intercept_, C)
        mine = squared_hinge_objective(x[subset], labels[subset], coef, intercept, C)
        assert mine == pytest.approx(theirs, rel=1e-5)
        scores = result.scores[~subset, 3 * i : 3 * i + 3].numpy()  # held-out rows: scores come free
        np.testing.assert_allclose(scores, x[~subset] @ coef.T + intercept, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("C", [0.01, 10.0])
def test_single_fit_with_more_features_than_images(C):
    """N <= D: the torch backend starts from the kernel-space Newton solution and checks it in the
    primal; the result is liblinear's optimum."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 150)
    x = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(150, 400))
    x[:, :4] = np.where(labels[:, None] == np.arange(4), 1, -1)  # plus a little signal
    svm = LinearSVM(C=C, backend="torch", tol=1e-6).fit(x, labels)
    record = svm.describe()
    assert record["solver"].startswith("kernel Newton") and record["converged"]
    reference = LinearSVC(C=C, tol=1e-8, max_iter=200_000, dual=True).fit(x.astype(np.float32), labels)
    theirs = squared_hinge_objective(x, labels, reference.coef_, reference.intercept_, C)
    assert record["objective"] == pytest.approx(theirs, rel=1e-5)
    assert (svm.predict(x) == reference.predict(x.astype(np.float32))).all()


def test_backends_give_the_same_accuracy(digits):
    x, y = digits
    train, test = slice(0, 1200), slice(1200, None)
    accuracy = {}
    for backend in ("sklearn", "torch"):
        svm = LinearSVM(C=0.1, backend=backend).fit(x[train], y[train])
        accuracy[backend] = (svm.predict(x[test]) == y[test]).mean()
        assert svm.describe()["C"] == 0.1 and svm.describe()["converged"]
    assert abs(accuracy["sklearn"] - accuracy["torch"]) <= 0.005


@pytest.mark.parametrize(
    ("backend", "noise_dims", "solver"),
    [("sklearn", 60, "one fit"), ("torch", 60, "one fit"), ("torch", 400, "kernel Newton")],
)
def test_c_auto_picks_the_best_grid_value(backend, noise_dims, solver):
    """Labels with 30 % noise and noise dimensions, so the grid values score differently; the
    choice is the grid's best mean, and the means are those of an independent cross-validation.
    With more features than images the torch backend solves the grid in kernel space."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(0)
    n, signal = 300, rng.normal(0, 1, (300, 2))
    labels = (signal[:, 0] + signal[:, 1] > 0).astype(int)
    flip = rng.random(n) < 0.3
    labels[flip] = 1 - labels[flip]
    x = np.hstack([signal, rng.normal(0, 1, (n, noise_dims))]).astype(np.float32)
    grid = [1e-4, 1e-2, 1.0, 100.0]
    svm = LinearSVM(C="auto", backend=backend, c_grid=grid, cv_folds=5, metric="top1").fit(x, labels)
    record = svm.describe()
    assert record["C_selection"]["solver"].startswith(solver)
    means = {row["C"]: row["mean"] for row in record["C_selection"]["grid"]}
    assert sorted(means) == grid and all(len(row["scores"]) == 5 for row in record["C_selection"]["grid"])
    assert record["C"] == max(grid, key=lambda c: (means[c], -c))  # the best mean (smallest C on ties)
    assert len(set(means.values())) > 1  # the grid values do differ on this problem
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    for c in grid:
        independent = cross_val_score(LinearSVC(C=c), x, labels, cv=folds).mean()
        assert means[c] == pytest.approx(independent, abs=0.01 if backend == "torch" else 1e-6)
    assert svm.chosen_C == record["C"]  # the final model was refit with it


def test_bad_classifier_settings():
    with pytest.raises(ValueError, match="backend must be one of sklearn, torch"):
        LinearSVM(backend="cuml")
    with pytest.raises(ValueError, match="positive or 'auto'"):
        LinearSVM(C="best")
    with pytest.raises(ValueError, match="at least 2 training images per class"):
        LinearSVM(C="auto").fit(np.eye(3, dtype=np.float32), np.array([0, 1, 2]))
