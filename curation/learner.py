"""The model in the loop: a classifier that every single label updates at once.

Issue 3's measurements (ANCHORS.md) decide the design: a bare `SGDClassifier.partial_fit` on each
new batch does *worse* than random order under uncertainty sampling, while a logistic regression
refit on all labels so far reaches 95% of full-data accuracy on digits with ~100 labels against
~190 for random order, and costs a few milliseconds at a few hundred labels. So "incremental" here
means: keep every labelled row, and on each update refit a `LogisticRegression` on all of them,
warm-started from the previous coefficients with a small `max_iter`, so each update is bounded
and starts close to the answer.

Pure code over arrays (no ORM): the trainer passes feature rows (dense or scipy.sparse) and
label names; skipped items are simply never passed in. Multi-label is one-vs-rest with one
warm-started logistic regression per class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.multiclass import OneVsRestClassifier

from curation.accuracy import wilson_interval as wilson_interval
from curation.strategy_names import DEFAULT_MIN_PER_CLASS as DEFAULT_MIN_PER_CLASS

__all__ = ["DEFAULT_C", "DEFAULT_MAX_ITER", "IncrementalLearner", "wilson_interval"]

#: Inverse regularisation strength. 1.0 is scikit-learn's default and generalises well at tens
#: to hundreds of labels on unit-scaled features (digits/16, l2-normalised hashed text).
DEFAULT_C = 1.0
#: lbfgs iterations per update. Warm-started refits converge in a few iterations; the cap bounds
#: the cost of the first fit and of an update that adds a new class (which starts from scratch).
DEFAULT_MAX_ITER = 100

Labels = str | Sequence[str]


def _frozen_lr(
    coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, params: dict
) -> LogisticRegression:
    """A fitted-looking LogisticRegression from stored arrays.

    Used for a one-vs-rest class that has seen only one value (coef 0, intercept = logit of its
    smoothed rate) and for models loaded from a file, so every prediction goes through the same
    scikit-learn code path and a reloaded model predicts bit-for-bit like the saved one. With
    warm_start=True a later fit continues from these coefficients.
    """
    model = LogisticRegression(**params)
    model.classes_ = np.asarray(classes)
    model.coef_ = np.array(coef, dtype=np.float64, ndmin=2)
    model.intercept_ = np.array(intercept, dtype=np.float64, ndmin=1)
    model.n_features_in_ = model.coef_.shape[1]
    model.n_iter_ = np.zeros(1, dtype=np.int32)
    return model


def _fold_scores(
    estimator: Any,
    X: Any,
    y: np.ndarray,
    cv: KFold | StratifiedKFold,
    scoring: str | None,
    between_folds: Callable[[], None] | None,
) -> list[float]:
    """`cross_val_score`, one fold at a time (same splits, same scores), calling
    `between_folds` before each."""
    scores: list[float] = []
    for split in cv.split(X, y):
        if between_folds is not None:
            between_folds()
        scores.extend(cross_val_score(estimator, X, y, cv=[split], scoring=scoring))
    return scores


class IncrementalLearner:
    """Single-label (softmax) or multi-label (one-vs-rest) logistic regression over fixed classes.

    `classes` is the project's ordered list of class names; `predict_proba` columns follow it.
    Single-label rows sum to 1 and classes never labelled yet get probability 0 (before two
    classes have been seen there is nothing to fit, and the Laplace-smoothed label frequencies
    are returned instead: uniform before any label). Multi-label columns are independent
    positive probabilities.
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        multi_label: bool = False,
        n_features: int | None = None,
        C: float = DEFAULT_C,
        max_iter: int = DEFAULT_MAX_ITER,
    ) -> None:
        names = [str(c) for c in classes]
        if not names:
            raise ValueError("a learner needs at least one class")
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique; got {names}")
        self.classes = names
        self.multi_label = bool(multi_label)
        self.n_features = n_features
        self.params = {"C": float(C), "max_iter": int(max_iter), "warm_start": True}
        self._index = {name: i for i, name in enumerate(names)}
        self._X: np.ndarray | sp.csr_matrix | None = None
        self._Y = np.zeros((0, len(names)), dtype=np.int8)  # indicator matrix, both modes
        # Counts survive a save/load even though the training rows are not stored in the file.
        self.label_counts = np.zeros(len(names), dtype=np.int64)
        self.n_labels = 0
        self._rows_missing = False  # set by artifacts.load_learner
        self._model: LogisticRegression | None = None  # single-label
        self._ovr: list[LogisticRegression] | None = None  # multi-label, one per class
        # (coef.T, intercept) per row dtype for `_decision`; a new dict whenever the models
        # change (a shallow copy of the learner keeps the dict of its own models).
        self._weights: dict[type, tuple[np.ndarray, np.ndarray]] = {}

    # -- labels ----------------------------------------------------------------------------------

    def _encode(self, y: Sequence[Labels]) -> np.ndarray:
        """Label names to an indicator matrix; the error names the bad row and class."""
        Y = np.zeros((len(y), len(self.classes)), dtype=np.int8)
        for row, labels in enumerate(y):
            names = [labels] if isinstance(labels, str) else list(labels)
            if not self.multi_label and len(names) != 1:
                raise ValueError(f"label #{row}: single-label needs exactly one class, got {names}")
            for name in names:
                if name not in self._index:
                    raise ValueError(
                        f"label #{row}: unknown class {name!r} (known: {', '.join(self.classes)})"
                    )
                Y[row, self._index[name]] = 1
        return Y

    def _check_X(self, X: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
        X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (n_rows, n_features); got shape {X.shape}")
        if self.n_features is None:
            self.n_features = X.shape[1]
        elif X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features; this learner uses {self.n_features}")
        return X

    def update(self, X_new: np.ndarray | sp.spmatrix, y_new: Sequence[Labels]) -> None:
        """Add labelled rows and refit on all labels so far (warm-started).

        Single-label: each label is a class name (or a one-element list, as stored on
        Annotation.labels). Multi-label: each label is a list of class names, possibly empty.
        Validation happens before anything changes, so bad input leaves the learner intact.
        """
        if self._rows_missing:
            raise RuntimeError(
                "this learner was loaded from a model file, which holds no training rows; "
                "call fit() with all labels so far (the database is the source of truth)"
            )
        X_new = self._check_X(X_new)
        Y_new = self._encode(y_new)
        if X_new.shape[0] != Y_new.shape[0]:
            raise ValueError(f"X has {X_new.shape[0]} rows but y has {Y_new.shape[0]} labels")
        if X_new.shape[0] == 0:
            return
        if self._X is None:
            self._X = X_new
        elif sp.issparse(self._X) != sp.issparse(X_new):
            raise ValueError("do not mix sparse and dense feature rows in one learner")
        elif sp.issparse(X_new):
            self._X = sp.vstack([self._X, X_new], format="csr")
        else:
            self._X = np.vstack([self._X, X_new])
        self._Y = np.vstack([self._Y, Y_new])
        self.label_counts = self._Y.sum(axis=0).astype(np.int64)
        self.n_labels = self._Y.shape[0]
        self._refit()

    def fit(self, X: np.ndarray | sp.spmatrix, y: Sequence[Labels]) -> None:
        """Replace all labelled rows with (X, y) and refit, still warm-started from the current
        coefficients (e.g. after loading a model file, or for a periodic full refit)."""
        self._X, self._rows_missing = None, False
        self._Y = np.zeros((0, len(self.classes)), dtype=np.int8)
        self.label_counts[:] = 0
        self.n_labels = 0
        self.update(X, y)

    # -- fitting ---------------------------------------------------------------------------------

    def _refit(self) -> None:
        self._weights = {}
        with warnings.catch_warnings():
            # Bounded iterations per update are deliberate; the next update continues from here.
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.multi_label:
                self._refit_ovr()
            else:
                self._refit_single()

    def _active_columns(self) -> np.ndarray | None:
        """Columns some labelled row uses, for sparse features (None: use all columns).

        With L2 regularisation a column no labelled row touches has weight exactly 0 at the
        optimum, so fitting on the used columns only gives the same model. For hashed text that
        is ~15k of 131k columns at 300 labels, and lbfgs's vector work shrinks in proportion.
        """
        if not sp.issparse(self._X):
            return None
        # A count per column, not np.unique: a sort of every stored value cost ~40 ms of each
        # refit at 3,000 labels, the count a few.
        used = np.bincount(self._X.indices, minlength=self._X.shape[1])
        return np.flatnonzero(used)

    def _fit_compact(
        self, previous: LogisticRegression | None, y: np.ndarray, classes: np.ndarray
    ) -> LogisticRegression:
        """Fit on the active columns, warm-started from `previous`, and return a model with
        full-width coefficients (zeros elsewhere) so prediction needs no column mapping."""
        cols = self._active_columns()
        model = LogisticRegression(**self.params)
        if previous is not None and np.array_equal(previous.classes_, classes):
            # Warm start: the previous solution restricted to today's columns.
            model.coef_ = previous.coef_ if cols is None else previous.coef_[:, cols]
            model.intercept_ = previous.intercept_.copy()
        model.fit(self._X if cols is None else self._X[:, cols], y)
        if cols is None:
            return model
        coef = np.zeros((model.coef_.shape[0], self.n_features))
        coef[:, cols] = model.coef_
        return _frozen_lr(coef, model.intercept_, model.classes_, self.params)

    def _refit_single(self) -> None:
        y = self._Y.argmax(axis=1)
        seen = np.unique(y)
        if seen.size < 2:
            self._model = None
            return
        # Warm start needs the same set of classes; a newly seen class restarts from zero.
        self._model = self._fit_compact(self._model, y, seen)

    def _refit_ovr(self) -> None:
        n = self._Y.shape[0]
        old = self._ovr or [None] * len(self.classes)
        models = []
        for j, prev in enumerate(old):
            column = self._Y[:, j]
            positives = int(column.sum())
            if positives in (0, n):
                # Only one value seen: a constant, smoothed so it is never exactly 0 or 1.
                rate = (positives + 1) / (n + 2)
                models.append(
                    _frozen_lr(
                        np.zeros((1, self.n_features)),
                        [math.log(rate / (1 - rate))],
                        np.array([0, 1]),
                        self.params,
                    )
                )
                continue
            models.append(self._fit_compact(prev, column, np.array([0, 1])))
        self._ovr = models

    # -- prediction ------------------------------------------------------------------------------

    def prior(self) -> np.ndarray:
        """Laplace-smoothed class frequencies: uniform before any label."""
        counts = self.label_counts.astype(np.float64) + 1.0
        if self.multi_label:
            return counts / (self.n_labels + 2.0)
        return counts / counts.sum()

    def predict_proba(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """(n, k) probabilities with columns in `classes` order (see the class docstring)."""
        X = self._check_X(X)
        n, k = X.shape[0], len(self.classes)
        if self.multi_label:
            if self._ovr is None:
                return np.tile(self.prior(), (n, 1))
            return expit(self._decision(X)).reshape(n, k)
        if self._model is None:
            return np.tile(self.prior(), (n, 1))
        scores = self._decision(X)
        if scores.shape[1] == 1:  # two classes seen: one logistic column, as scikit-learn
            positive = expit(scores[:, 0])
            seen = np.column_stack([1.0 - positive, positive])
        else:
            seen = softmax(scores, axis=1)
        out = np.zeros((n, k))
        out[:, self._model.classes_] = seen
        return out

    def _decision(self, X: np.ndarray | sp.csr_matrix) -> np.ndarray:
        """X @ coef.T + intercept as float64, what scikit-learn's `decision_function` computes,
        without its per-call input checks and copies.

        The trainer scores a 20k-row pool sample after every label: through scikit-learn each
        call copied the transposed coefficients and upcast the float32 hashed rows to float64
        (~120 ms a run at 100k items, cProfile). Here the coefficients are laid out once per
        fit in the rows' dtype, so a float32 sparse product reads the rows where they are.
        """
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        weights = self._weights.get(dtype)
        if weights is None:
            state = self.state()
            coef_t = np.ascontiguousarray(state[1].T, dtype=dtype)
            weights = self._weights[dtype] = (coef_t, np.asarray(state[2], dtype=np.float64))
        coef_t, intercept = weights
        scores = X @ coef_t
        return np.asarray(scores, dtype=np.float64) + intercept

    def predict(self, X: np.ndarray | sp.spmatrix, threshold: float = 0.5) -> list:
        """Class names: one per row (single-label) or a list per row (multi-label)."""
        p = self.predict_proba(X)
        if self.multi_label:
            return [[self.classes[j] for j in np.flatnonzero(row >= threshold)] for row in p]
        return [self.classes[j] for j in p.argmax(axis=1)]

    # -- state -----------------------------------------------------------------------------------

    def is_cold(self, min_per_class: int = DEFAULT_MIN_PER_CLASS) -> bool:
        """True until every class has `min_per_class` labels (multi-label: positive labels).

        While cold the model is not trusted to flag label errors; the page lists the classes
        still short of `min_per_class` as the examples the model needs.
        """
        return bool((self.label_counts < min_per_class).any())

    def can_rank(self) -> bool:
        """Whether the model tells items apart at all: single-label once two classes have
        labels (a softmax needs two), multi-label once some class has both a positive and a
        negative label. Before that it predicts the prior everywhere, so its scores are ties."""
        counts = self.label_counts
        if self.multi_label:
            return bool(((counts > 0) & (counts < self.n_labels)).any())
        return bool((counts > 0).sum() >= 2)

    def unseen_classes(self) -> list[str]:
        """Classes without a label (multi-label: without a positive one): the model can never
        predict them, so its guesses are not shown as confident until this is empty."""
        return [c for c, n in zip(self.classes, self.label_counts, strict=True) if n == 0]

    def estimated_accuracy(
        self, *, random_state: int = 0, between_folds: Callable[[], None] | None = None
    ) -> float | None:
        """Cross-validated quality on the labels so far, or None when there are too few.

        Single-label: accuracy, StratifiedKFold with min(5, smallest class count) folds over
        the classes seen (None below 2 folds or 2 classes). Multi-label: micro-averaged F1 of a
        one-vs-rest logistic regression, KFold with min(5, n // 5) folds (None below 10 labels);
        micro-F1 rather than subset accuracy, which is near 0 for many classes and says little.
        Optimistic under uncertainty sampling (the labelled items are not a random sample): the
        evaluation slice with `wilson_interval` is the honest number.

        `between_folds` is called before each fold's fit: the training worker waits there while
        a label's run is in progress, so the estimate's refits never hold it up by more than one
        fold.
        """
        if self._X is None:
            return None
        params = {**self.params, "warm_start": False}
        # The columns the labels use give the same models at a fraction of the cost (see
        # _active_columns); cross-validation refits ten or so of them.
        cols = self._active_columns()
        X = self._X if cols is None else self._X[:, cols]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and one-valued-fold warnings
            if self.multi_label:
                folds = min(5, self.n_labels // 5)
                if folds < 2:
                    return None
                cv = KFold(folds, shuffle=True, random_state=random_state)
                estimator = OneVsRestClassifier(LogisticRegression(**params))
                scores = _fold_scores(estimator, X, self._Y, cv, "f1_micro", between_folds)
            else:
                y = self._Y.argmax(axis=1)
                seen = self.label_counts[self.label_counts > 0]
                folds = min(5, int(seen.min())) if seen.size >= 2 else 0
                if folds < 2:
                    return None
                cv = StratifiedKFold(folds, shuffle=True, random_state=random_state)
                estimator = LogisticRegression(**params)
                scores = _fold_scores(estimator, X, y, cv, None, between_folds)
        return float(np.mean(scores))

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model_classes, coef, intercept) as plain arrays, for the model file.

        Single-label: model_classes are the class indices the softmax was fitted on (empty when
        unfitted), coef has one row per model class (one row in the binary case). Multi-label:
        one coef row and intercept per class, model_classes = arange(k) (empty when unfitted).
        """
        d = self.n_features or 0
        if self.multi_label and self._ovr is not None:
            coef = np.vstack([m.coef_ for m in self._ovr])
            intercept = np.concatenate([m.intercept_ for m in self._ovr])
            return np.arange(len(self.classes)), coef, intercept
        if not self.multi_label and self._model is not None:
            return self._model.classes_.astype(np.int64), self._model.coef_, self._model.intercept_
        return np.zeros(0, dtype=np.int64), np.zeros((0, d)), np.zeros(0)

    def set_state(self, model_classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        """Inverse of `state`: rebuild the fitted models from stored arrays."""
        self._weights = {}
        if model_classes.size == 0:
            self._model, self._ovr = None, None
        elif self.multi_label:
            binary = np.array([0, 1])
            self._ovr = [
                _frozen_lr(coef[j : j + 1], intercept[j : j + 1], binary, self.params)
                for j in range(len(self.classes))
            ]
        else:
            self._model = _frozen_lr(coef, intercept, model_classes, self.params)
