"""Out-of-sample class probabilities: each labelled row predicted by a model that never saw it.

The weighted consensus (`curation.consensus`) and the label-error search
(`curation.label_errors`) both need them: a model's probabilities for the very rows it was
fitted on echo their labels back, so a wrong label looks right. Stratified k-fold
cross-validation of the project's learner kind (a logistic regression with its C) gives each
labelled row the probabilities of the fold model that left it out, and each unlabelled row the
average of the fold models.

Pure code over arrays; sparse rows stay sparse.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

__all__ = ["compact_columns", "out_of_sample_proba"]


def compact_columns(X: Any) -> Any:
    """X without the columns no row uses (sparse X; dense X is returned as it is).

    With L2 regularisation such a column's weight is exactly 0 at the optimum, so fitting
    without it gives the same model at a fraction of lbfgs's vector work (hashed text uses
    ~15k of 131k columns at 300 labels). A count per column, not np.unique: no sort.
    """
    if not sp.issparse(X):
        return X
    used = np.flatnonzero(np.bincount(X.indices, minlength=X.shape[1]))
    return X[:, used] if used.size < X.shape[1] else X


def out_of_sample_proba(
    X: Any,
    y: np.ndarray,
    n_classes: int,
    *,
    C: float,
    max_iter: int,
    folds: int,
    random_state: int = 0,
    solver: str = "lbfgs",
    fallback: Callable[[Any], np.ndarray] | None = None,
    between_folds: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """((n, n_classes) probabilities, folds fitted) for the rows of X.

    `y` holds each row's class index, -1 for no label. Labelled rows get the probabilities of
    the fold model that did not see them (classes a fold model never saw: 0); unlabelled rows
    the fold models' average. A fold whose training part has a single class (a rare class's
    only rows all fell in its test part) cannot be fitted: its rows get `fallback(X[rows])`
    (default: the training part's class, certain). `folds` is capped by the largest class's
    count; below 2 folds nothing is fitted and every row gets `fallback` (or zeros).
    `between_folds(done, total)` is called before each fold (progress; the training worker
    lets a label's run go first there). `solver`: lbfgs as the trainer fits; "saga" (the same
    objective, one pass over the rows per iteration, float32 rows as they are) for large sets.

    One BLAS thread, as in the worker: these fits are small and threads only contend (a busy
    2-core machine took 10x longer with two).
    """
    n = X.shape[0]
    out = np.zeros((n, n_classes))
    labelled = np.flatnonzero(y >= 0)
    counts = np.bincount(y[labelled], minlength=n_classes)
    folds = min(int(folds), int(counts.max()) if labelled.size else 0)
    if (counts > 0).sum() < 2 or folds < 2:
        return (fallback(X) if fallback is not None else out), 0
    Xc = compact_columns(X)
    unlabelled = np.flatnonzero(y < 0)
    fitted = 0
    cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence; a class too rare for every fold
        for done, (train, test) in enumerate(cv.split(labelled, y[labelled])):
            if between_folds is not None:
                between_folds(done, folds)
            train, test = labelled[train], labelled[test]
            seen = np.unique(y[train])
            if seen.size < 2:
                if fallback is not None:
                    out[test] = fallback(X[test])
                else:
                    out[test, seen[0]] = 1.0
                continue
            model = LogisticRegression(C=C, max_iter=max_iter, solver=solver)
            model.fit(Xc[train], y[train])
            out[np.ix_(test, model.classes_)] = model.predict_proba(Xc[test])
            if unlabelled.size:
                out[np.ix_(unlabelled, model.classes_)] += model.predict_proba(Xc[unlabelled])
            fitted += 1
    if unlabelled.size:
        if fitted:
            out[unlabelled] /= fitted
        elif fallback is not None:
            out[unlabelled] = fallback(X[unlabelled])
    return out, fitted
