"""The torch solvers reach their tolerance where a float32 objective cannot (float32 L-BFGS, then a
float64 check and finish: tlbench/classifiers/lbfgs.py), and every fit that stops short is logged."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.svm import LinearSVC

from tlbench.classifiers import LinearSVM, LogisticRegression
from tlbench.classifiers.lbfgs import minimize


def gaussian_classes(seed: int, n: int, k: int, d: int = 64, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian classes in d dimensions whose centres are close enough to overlap: learnable
    (about 85 % test accuracy at k = 100) but not separable (about 90 % on the training rows)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d))
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(0, 1, (n, d))).astype(np.float32), labels


def test_minimize_finishes_in_float64_what_float32_cannot():
    """An ill-conditioned quadratic (curvatures 1e6 to 1e8, a positive minimum as a loss has, computed
    in the weights' dtype) whose optimum 1/3 float32 cannot represent: at float32 resolution the
    gradient is 10x the 1e-9 the stopping rule asks, so only the float64 phase reaches it."""
    curvature = torch.logspace(6, 8, 50, dtype=torch.float64)

    def objective(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, r = curvature.to(w.dtype), w - 1 / 3
        return (0.5 * a * r**2).double().sum() + 1e6, a * r

    target = 1e-9 * float(curvature.norm())
    result = minimize(objective, torch.zeros(50), lambda g: float(g.norm()) <= target, max_iter=500)
    assert result.converged and result.float64_iterations > 0 and result.weights.dtype == torch.float64
    assert float(result.grad.norm()) <= target
    assert float(objective(result.weights.float().double())[1].norm()) > target  # the same point in float32


def test_torch_svm_converges_at_20000_rows_and_predicts_as_liblinear():
    """The issue's case: 20,000 x 64, 100 classes, default tol. The float32 solver stopped at 5.2x
    the tolerance here (converged: false); now it converges, with liblinear's test predictions.
    All equal is not luck of rounding (measured): the exact optimum's smallest top-2 score gap on
    these 3,000 rows is 0.0027, and six fits with other rounding (chunk sizes, starting points) all
    kept every prediction. At tol 1e-4 equality is not guaranteed in general: L-BFGS stops nearer the
    tolerance than liblinear's Newton steps, its top-2 gaps moved up to 0.03 from the optimum's."""
    x, labels = gaussian_classes(0, 23_000, 100)
    train, test = slice(0, 20_000), slice(20_000, None)
    reference = LinearSVC(C=10.0).fit(x[train], labels[train])  # liblinear, tol 1e-4 as the config
    assert np.max(reference.n_iter_) < reference.max_iter
    assert 0.8 < (reference.predict(x[train]) == labels[train]).mean() < 0.95  # learnable, not separable
    svm = LinearSVM(C=10.0, backend="torch").fit(x[train], labels[train])
    record = svm.describe()
    assert record["converged"] and record["grad_norm"] <= record["target"], record
    assert (svm.predict(x[test]) == reference.predict(x[test])).all()


def test_torch_logistic_regression_converges_at_20000_rows():
    """A tolerance the float32 objective could not reach at 20,000 rows (it stopped at 2.4x)."""
    x, labels = gaussian_classes(0, 23_000, 10)
    train, test = slice(0, 20_000), slice(20_000, None)
    model = LogisticRegression(C=0.01, tol=1e-6).fit(x[train], labels[train])
    record = model.describe()
    assert record["converged"] and record["grad_max"] <= record["target"], record
    reference = SkLogisticRegression(C=0.01, tol=1e-8, max_iter=10_000).fit(x[train], labels[train])
    assert (model.predict(x[test]) == reference.predict(x[test])).all()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_a_fit_short_of_its_tolerance_is_logged(digits, backend, caplog):
    x, y = digits
    with caplog.at_level(logging.WARNING):
        svm = LinearSVM(C=1.0, backend=backend, max_iter=2).fit(x, y)
    assert svm.describe()["converged"] is False
    (message,) = warnings_of(caplog)
    assert f"linear_svm ({backend}) did not converge at C=1:" in message
    assert "iterations (max_iter 2), gradient" in message and "> tolerance" in message
    gradient = float(message.split("gradient ")[1].split(" ")[0])
    assert gradient == pytest.approx(svm.describe()["grad_norm"], rel=1e-2)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        LinearSVM(C=1.0, backend=backend).fit(x, y)
    assert warnings_of(caplog) == []  # a converged fit says nothing


def test_logistic_regression_short_of_its_tolerance_is_logged(digits, caplog):
    x, y = digits
    with caplog.at_level(logging.WARNING):
        model = LogisticRegression(C=1.0, max_iter=2).fit(x, y)
    assert model.describe()["converged"] is False
    (message,) = warnings_of(caplog)
    assert message.startswith("logistic_regression did not converge at C=1: 2 iterations (max_iter 2), gradient")


@pytest.mark.parametrize(("backend", "dims"), [("torch", 64), ("torch", 400), ("sklearn", 64)])
def test_c_auto_summarises_unconverged_grid_fits_in_one_line(backend, dims, caplog):
    """Every grid fit short of its tolerance is recorded in C_selection and named in one warning
    (400 dimensions > 300 rows: the kernel-space solver)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    x = (rng.normal(0, 1, (3, dims))[labels] + rng.normal(0, 2, (300, dims))).astype(np.float32)
    grid = [0.1, 10.0, 1000.0]
    with caplog.at_level(logging.WARNING):
        svm = LinearSVM(C="auto", backend=backend, c_grid=grid, cv_folds=3, max_iter=1).fit(x, labels)
    unconverged = svm.describe()["C_selection"]["unconverged_fits"]
    assert unconverged and {r["fold"] for r in unconverged} <= {0, 1, 2} and {r["C"] for r in unconverged} <= set(grid)
    assert all(r["gradient"] > r["tolerance"] for r in unconverged)
    summary = [m for m in warnings_of(caplog) if "C=auto" in m]
    assert len(summary) == 1
    assert f"C=auto: {len(unconverged)} of 9 grid fits did not converge" in summary[0]
    first = unconverged[0]
    assert f"fold {first['fold']} C={first['C']:g}: {first['iterations']} iterations (max_iter 1)" in summary[0]
