"""Cold start: which items to label first, before the model can say what it does not know.

TypiClust (Hacohen, Dekel and Weinshall, "Active learning on a budget", ICML 2022) shows that
with very few labels the best items are *typical* ones, each from a different dense region of
the data: the model learns the bulk of each class from them, where uncertainty sampling (noise
at that stage) and coverage methods such as greedy k-centre pick outliers. (On one text set
k-centre's cold-start picks were 67–84% texts of 30 characters or less, 4% of its pool.)

The recipe, over the candidates the trainer already holds in memory (a random slice of its pool
sample, so the whole pool is never featurised): cluster labelled and candidate rows together
with k-means into (labelled + budget) clusters, then take from the largest clusters that hold no
labelled item yet the candidate of highest typicality, the inverse mean distance to its nearest
neighbours within its cluster. Pure code over arrays (dense or scipy.sparse), deterministic for
a seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import normalize

__all__ = ["typical_picks"]

#: Neighbours per point in the typicality estimate (the paper's 20), fewer in small clusters.
TYPICALITY_NEIGHBOURS = 20
#: Clusters smaller than this are taken only after every larger uncovered one: a cluster of
#: two or three points is an outlier group, the very thing this module avoids.
MIN_CLUSTER_SIZE = 5
#: The paper caps the clusters for large budgets; the trainer's budget (its cold head) is 50.
MAX_CLUSTERS = 500
#: Rows are projected to this many dimensions (truncated SVD) before clustering: k-means and
#: neighbour distances then take milliseconds, and the projection keeps the directions along
#: which the data varies most, which is what "dense regions" are made of.
COMPONENTS = 48
#: Sparse rows (hashed text: 2^17 columns) are folded onto this many columns first (a second
#: hashing): the SVD's cost grows with the columns, 1.5 s of CPU on 2,000 tweets unfolded
#: against 0.1 s folded, and the few collisions barely move the top directions.
SPARSE_FOLD = 4096


def typical_picks(
    candidates: Any, budget: int, *, labelled: Any = None, seed: int = 0
) -> np.ndarray:
    """Indices of up to `budget` rows of `candidates`, best first: the most typical candidate of
    each of the largest clusters no labelled row falls into (then of the covered ones, then a
    second pick per cluster, round-robin, if the budget asks for more).

    Rows are compared by direction (cosine), as the rest of the curation code does: they are
    scaled to unit length, and sparse ones projected by a truncated SVD. Duplicated rows are
    fine (they are at distance 0, hence typical); fewer candidates than `budget` gives all of
    them, in the same order of preference.
    """
    n = candidates.shape[0]
    budget = min(int(budget), n)
    if budget <= 0:
        return np.zeros(0, dtype=np.intp)
    n_labelled = 0 if labelled is None else labelled.shape[0]
    rows = _stack(candidates, labelled) if n_labelled else candidates
    Z = _embed(rows, seed)
    n_clusters = min(n_labelled + budget, MAX_CLUSTERS, _distinct_rows(Z))
    assignment = _cluster(Z, n_clusters, seed)
    covered = np.zeros(n_clusters, dtype=bool)
    covered[assignment[n:]] = True
    cand_assignment = assignment[:n]
    sizes = np.bincount(assignment, minlength=n_clusters)
    # Uncovered first, then tiny clusters last, then large before small; ties by cluster id.
    order = np.lexsort((np.arange(n_clusters), -sizes, sizes < MIN_CLUSTER_SIZE, covered))
    members = {c: np.flatnonzero(cand_assignment == c) for c in order}
    ranked = {c: _by_typicality(Z[members[c]], members[c]) for c in order if members[c].size}
    picks: list[int] = []
    depth = 0
    while len(picks) < budget:
        for c in ranked:
            if depth < ranked[c].size:
                picks.append(int(ranked[c][depth]))
                if len(picks) == budget:
                    break
        depth += 1
    return np.asarray(picks, dtype=np.intp)


def _stack(candidates: Any, labelled: Any) -> Any:
    if sp.issparse(candidates) or sp.issparse(labelled):
        return sp.vstack([sp.csr_matrix(candidates), sp.csr_matrix(labelled)], format="csr")
    return np.vstack([np.asarray(candidates), np.asarray(labelled)])


def _embed(X: Any, seed: int) -> np.ndarray:
    """Unit-length dense rows: cosine geometry, in few enough dimensions to cluster fast."""
    if sp.issparse(X):
        X = normalize(sp.csr_matrix(X, dtype=np.float64))
        if X.shape[1] > SPARSE_FOLD:
            X = sp.csr_matrix(
                (X.data, X.indices % SPARSE_FOLD, X.indptr), shape=(X.shape[0], SPARSE_FOLD)
            )
            X.sum_duplicates()
    else:
        X = normalize(np.asarray(X, dtype=np.float64))
    components = min(COMPONENTS, X.shape[0] - 1, X.shape[1] - 1)
    if X.shape[1] > COMPONENTS and components >= 2:
        X = TruncatedSVD(components, n_iter=3, random_state=seed).fit_transform(X)
    X = X.toarray() if sp.issparse(X) else X
    return normalize(np.asarray(X, dtype=np.float64))


def _distinct_rows(Z: np.ndarray) -> int:
    """k-means cannot make more non-empty clusters than there are distinct points."""
    return int(np.unique(np.round(Z, 9), axis=0).shape[0])


def _cluster(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    if k <= 1:
        return np.zeros(Z.shape[0], dtype=np.intp)
    # Plain k-means with one k-means++ start: on the trainer's 2,000 candidates it is faster than
    # MiniBatchKMeans with its default three starts (20 against 60 ms), and as good here.
    return KMeans(k, n_init=1, random_state=seed).fit_predict(Z).astype(np.intp)


def _by_typicality(Z: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`index` sorted by typicality within its cluster, most typical first (ties by index)."""
    m = index.size
    if m <= 2:
        return index
    k = min(TYPICALITY_NEIGHBOURS, m // 2)
    d = euclidean_distances(Z)
    np.fill_diagonal(d, np.inf)
    nearest = np.partition(d, k - 1, axis=1)[:, :k]
    typicality = 1.0 / (nearest.mean(axis=1) + 1e-5)
    return index[np.lexsort((index, -typicality))]
