"""C=auto for every classifier: a log grid of C scored with the dataset's metric on held-out rows,
by stratified k-fold cross-validation on the training split (c_selection=kfold) or on folds the caller
gives, e.g. one (train, val) split (c_selection=validation, the protocol of Kornblith et al. 2019:
C chosen on a validation set, the model refit on train + val); the classifier supplies the held-out
predictions (one fit per fold and C, or all of them at once), this module makes or checks the folds
and picks the C. `AutoC` is what the classifiers share of it: the parameters, the selection and its
record in describe()."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from tlbench.classifiers.convergence import warn_grid
from tlbench.metrics import classification_metrics

DEFAULT_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
Folds = list[tuple[np.ndarray, np.ndarray]]  # (train rows, held-out rows) per fold
C_SELECTIONS = ("kfold", "validation")


def check_C(C: float | str, c_grid: Sequence[float], cv_folds: int, c_selection: str = "kfold") -> None:
    if C != "auto" and (isinstance(C, str) or C <= 0):
        raise ValueError(f"classifier.C must be positive or 'auto', got {C!r}")
    if c_selection not in C_SELECTIONS:
        raise ValueError(f"classifier.c_selection must be one of {', '.join(C_SELECTIONS)}, got {c_selection!r}")
    if c_selection == "validation" and C != "auto":
        raise ValueError(
            f"classifier.c_selection=validation chooses C on a validation split: it needs classifier.C=auto, got {C!r}"
        )
    if C == "auto" and (not c_grid or min(c_grid) <= 0):
        raise ValueError(f"C=auto needs a positive c_grid, got {c_grid}")
    if C == "auto" and c_selection == "kfold" and cv_folds < 2:
        raise ValueError(f"C=auto with c_selection=kfold needs cv_folds >= 2, got {cv_folds}")


def selection_folds(
    labels: np.ndarray, folds: Folds | None, C: float | str, c_selection: str, cv_folds: int, random_state: int
) -> tuple[Folds, str] | None:
    """The folds that score the grid and how they were made, or None when C is fixed. Given folds
    replace the stratified k-fold; the refit then uses every row, theirs included."""
    if folds is not None and C != "auto":
        raise ValueError(f"fit(folds=...) scores the C grid, and classifier.C={C!r} is fixed: set classifier.C=auto")
    if folds is None and c_selection == "validation":
        raise ValueError(
            "classifier.c_selection=validation scores C on a split the caller gives: fit(train + val rows, labels, "
            "folds=[(train_rows, val_rows)])"
        )
    if C != "auto":
        return None
    if folds is None:
        made = stratified_folds(labels, cv_folds, random_state)
        return made, f"stratified {len(made)}-fold"
    checked = [_check_fold(i, train, held, len(labels)) for i, (train, held) in enumerate(folds)]
    if not checked:
        raise ValueError("fit(folds=...) needs at least one (train rows, held-out rows) fold")
    if len(checked) == 1:
        train, held = checked[0]
        return checked, f"given: 1 fold, {len(train)} train / {len(held)} validation rows"
    sizes = ", ".join(f"{len(train)}/{len(held)}" for train, held in checked)
    return checked, f"given: {len(checked)} folds, train/held-out rows {sizes}"


def _check_fold(i: int, train: Any, held: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    train, held = np.asarray(train), np.asarray(held)
    for name, rows in (("train", train), ("held-out", held)):
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"fold {i}: {name} rows must be a 1-d array of row indices, got {rows.dtype} {rows.shape}")
        if len(rows) == 0 or rows.min() < 0 or rows.max() >= n:
            raise ValueError(f"fold {i}: {name} rows must be non-empty indices in [0, {n}), the rows given to fit")
    if np.intersect1d(train, held).size:
        raise ValueError(f"fold {i}: {np.intersect1d(train, held).size} rows are both train and held-out rows")
    return train, held


def stratified_folds(labels: np.ndarray, cv_folds: int, random_state: int) -> Folds:
    """At most cv_folds folds, fewer when the smallest class has fewer images."""
    smallest = int(np.bincount(np.unique(labels, return_inverse=True)[1]).min())
    folds = min(cv_folds, smallest)
    if folds < 2:
        raise ValueError(f"C=auto needs at least 2 training images per class, the smallest class has {smallest}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(len(labels)), labels))


def choose_C(
    labels: np.ndarray, folds: Folds, c_grid: Sequence[float], predictions: list[list[np.ndarray]], metric: str
) -> tuple[float, list[dict[str, Any]]]:
    """predictions[f][g]: the labels predicted for fold f's held-out rows when trained with c_grid[g].
    Returns the C of the best mean score (the smallest C of equal means) and the whole grid."""
    num_classes = int(labels.max()) + 1
    grid = []
    for g, c in enumerate(c_grid):
        scores = [
            classification_metrics(labels[held], predictions[f][g], num_classes)[metric]
            for f, (_, held) in enumerate(folds)
        ]
        grid.append({"C": float(c), "scores": scores, "mean": float(np.mean(scores))})
    best = max(grid, key=lambda row: row["mean"])  # max keeps the first of equal means: c_grid is ascending
    return float(best["C"]), grid


def warm_started_predictions(
    fit: Callable[[np.ndarray, np.ndarray, float, Any], Any],
    features: np.ndarray,
    labels: np.ndarray,
    folds: Folds,
    c_grid: Sequence[float],
) -> tuple[list[list[np.ndarray]], list[dict[str, Any]]]:
    """One fit per fold and C, ascending C, each started from the previous C's weights on the same
    fold (`fit(features, labels, C, init)` returns a model with `predict`, `convergence` (see
    tlbench/classifiers/convergence.py) and, if it can warm-start, `weights_`). Returns the held-out
    predictions [fold][C] and the fits that did not converge, with their fold and C."""
    predictions, unconverged = [], []
    for f, (train, held) in enumerate(folds):
        init, row = None, []
        for c in c_grid:
            model = fit(features[train], labels[train], c, init)
            init = getattr(model, "weights_", None)
            row.append(model.predict(features[held]))
            if not model.convergence["converged"]:
                unconverged.append({"fold": f, "C": float(c), **model.convergence})
        predictions.append(row)
    return predictions, unconverged


class AutoC:
    """C=auto for a classifier: `_fit_one(features, labels, C, init)` fits one C (see
    warm_started_predictions); `_grid_predictions` may be overridden to score the grid otherwise
    (the linear SVM's kernel-space solver). `label` names the classifier in warnings."""

    label: str

    def _init_C(
        self, C: float | str, c_grid: Sequence[float], cv_folds: int, metric: str, c_selection: str, random_state: int
    ) -> None:
        check_C(C, c_grid, cv_folds, c_selection)
        self.C = C
        self.c_selection = c_selection  # validation: the caller gives fit() the (train, val) fold
        self.c_grid = sorted(float(c) for c in c_grid)
        self.cv_folds = int(cv_folds)
        self.metric = metric  # the dataset's metric, for C=auto
        self.random_state = random_state
        self.chosen_C: float | None = None if C == "auto" else float(C)
        self.grid: list[dict[str, Any]] = []
        self.selection: dict[str, Any] = {}

    def _fit_one(self, features: np.ndarray, labels: np.ndarray, C: float, init: np.ndarray | None = None) -> Any:
        raise NotImplementedError

    def _grid_predictions(
        self, features: np.ndarray, labels: np.ndarray, folds: Folds
    ) -> tuple[list[list[np.ndarray]], list[dict[str, Any]], dict[str, Any]]:
        """(held-out predictions [fold][C], the unconverged fits, how they were solved)."""
        predictions, unconverged = warm_started_predictions(self._fit_one, features, labels, folds, self.c_grid)
        return predictions, unconverged, {"solver": "one fit per fold and C"}

    def _select_C(self, features: np.ndarray, labels: np.ndarray, folds: Folds | None) -> bool:
        """With C=auto, scores the grid (on `folds` when given) and sets chosen_C; False when C is fixed."""
        selection = selection_folds(labels, folds, self.C, self.c_selection, self.cv_folds, self.random_state)
        if selection is None:
            return False
        scored, made = selection
        predictions, unconverged, solver = self._grid_predictions(features, labels, scored)
        self.chosen_C, self.grid = choose_C(labels, scored, self.c_grid, predictions, self.metric)
        self.selection = {"folds": made, **solver, "unconverged_fits": unconverged}
        warn_grid(self.label, unconverged, len(scored) * len(self.c_grid))
        return True

    def _describe_C(self, record: dict[str, Any]) -> dict[str, Any]:
        """`record` with the C=auto grid and how it was scored, when C=auto."""
        if self.C == "auto":
            record["C_selection"] = {"c_selection": self.c_selection, "metric": self.metric, "grid": self.grid}
            record["C_selection"].update(self.selection)  # folds, solver, unconverged_fits
        return record
