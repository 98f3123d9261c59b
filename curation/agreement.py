"""Inter-annotator agreement over nominal labels: plain functions of a ratings matrix.

`Ratings` holds one project's answers as an (annotators × items) matrix of class indices, NaN
where an annotator did not label an item. The coefficients come from well-kept libraries —
Cohen's kappa from scikit-learn, Fleiss' kappa from statsmodels, Krippendorff's alpha from the
`krippendorff` package — so this module only shapes the data for them and says when a number is
undefined (None) rather than returning NaN. Multi-label projects are measured per class, each
class a yes/no question (`per_class`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss_kappa

__all__ = [
    "Ratings",
    "annotator_confusion",
    "fleiss_kappa",
    "krippendorff_alpha",
    "pairwise_cohen_kappa",
    "per_class",
    "percent_agreement",
]


@dataclass(frozen=True)
class Ratings:
    """Answers as an (annotators × items) float matrix of class indices, NaN where missing."""

    annotators: tuple
    items: tuple
    classes: tuple[str, ...]
    matrix: np.ndarray

    @classmethod
    def from_answers(
        cls, answers: Iterable[tuple[object, object, str]], classes: Sequence[str]
    ) -> Ratings:
        """From (item, annotator, class name) triples; names not in `classes` are an error."""
        index = {name: i for i, name in enumerate(classes)}
        rows = list(answers)
        annotators = tuple(sorted({a for _, a, _ in rows}, key=str))
        items = tuple(sorted({i for i, _, _ in rows}, key=str))
        a_pos = {a: n for n, a in enumerate(annotators)}
        i_pos = {i: n for n, i in enumerate(items)}
        matrix = np.full((len(annotators), len(items)), np.nan)
        for item, annotator, name in rows:
            if name not in index:
                raise ValueError(
                    f"item {item!r}, annotator {annotator!r}: unknown class {name!r} "
                    f"(known: {', '.join(classes)})"
                )
            matrix[a_pos[annotator], i_pos[item]] = index[name]
        return cls(annotators, items, tuple(classes), matrix)

    def counts(self) -> np.ndarray:
        """(items × classes) how many annotators chose each class for each item."""
        k = len(self.classes)
        out = np.zeros((self.matrix.shape[1], k), dtype=np.int64)
        for c in range(k):
            out[:, c] = (self.matrix == c).sum(axis=0)
        return out


def percent_agreement(ratings: Ratings) -> float | None:
    """Share of agreeing annotator pairs, averaged over the items with at least two answers."""
    counts = ratings.counts()
    n = counts.sum(axis=1)
    rated = n >= 2
    if not rated.any():
        return None
    pairs = n[rated] * (n[rated] - 1)
    agreeing = (counts[rated] * (counts[rated] - 1)).sum(axis=1)
    return float(np.mean(agreeing / pairs))


def pairwise_cohen_kappa(ratings: Ratings) -> dict[tuple, tuple[float | None, int]]:
    """{(annotator a, annotator b): (Cohen's kappa on the items both labelled, how many)}.

    None when they share fewer than two items or kappa is undefined (both always chose the same
    single class).
    """
    out: dict[tuple, tuple[float | None, int]] = {}
    labels = list(range(len(ratings.classes)))
    for (i, a), (j, b) in itertools.combinations(enumerate(ratings.annotators), 2):
        both = ~np.isnan(ratings.matrix[i]) & ~np.isnan(ratings.matrix[j])
        n = int(both.sum())
        kappa = None
        if n >= 2:
            x = ratings.matrix[i, both].astype(int)
            y = ratings.matrix[j, both].astype(int)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # undefined kappa: reported as None below
                value = cohen_kappa_score(x, y, labels=labels)
            kappa = None if np.isnan(value) else float(value)
        out[(a, b)] = (kappa, n)
    return out


def fleiss_kappa(ratings: Ratings) -> tuple[float | None, int]:
    """(Fleiss' kappa, items used). Fleiss' kappa needs the same number of raters per item, so
    it is computed over the items with the most common number of answers (at least two)."""
    counts = ratings.counts()
    n = counts.sum(axis=1)
    multi = n[n >= 2]
    if multi.size == 0:
        return None, 0
    raters = int(np.bincount(multi).argmax())
    table = counts[n == raters]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = _fleiss_kappa(table, method="fleiss")
    return (None if np.isnan(value) else float(value)), int(table.shape[0])


def krippendorff_alpha(ratings: Ratings) -> float | None:
    """Krippendorff's alpha (nominal): any number of answers per item, missing ones allowed."""
    pairable = (~np.isnan(ratings.matrix)).sum(axis=0) >= 2
    if not pairable.any():
        return None
    data = ratings.matrix[:, pairable]
    if np.unique(data[~np.isnan(data)]).size < 2:
        return None  # one class only: no disagreement is possible, alpha is undefined
    value = krippendorff.alpha(
        reliability_data=data,
        level_of_measurement="nominal",
        value_domain=list(range(len(ratings.classes))),
    )
    return None if np.isnan(value) else float(value)


def annotator_confusion(ratings: Ratings) -> np.ndarray:
    """(classes × classes) how often one annotator chose row while another chose column on the
    same item, over all ordered pairs of annotators (symmetric; the diagonal is agreement)."""
    k = len(ratings.classes)
    counts = ratings.counts()
    out = counts.T @ counts
    out[np.diag_indices(k)] -= counts.sum(axis=0)  # no annotator is paired with themself
    return out


def per_class(
    answers: Iterable[tuple[object, object, Sequence[str]]], classes: Sequence[str]
) -> dict[str, Ratings]:
    """Multi-label answers as one yes/no `Ratings` per class (classes "no", "yes")."""
    rows = list(answers)
    out = {}
    for name in classes:
        out[name] = Ratings.from_answers(
            (
                (item, annotator, "yes" if name in chosen else "no")
                for item, annotator, chosen in rows
            ),
            ["no", "yes"],
        )
    return out
