"""Query strategies: which unlabelled items are most worth an annotator's time next.

Every scorer is a plain, framework-free function of a probability array, so it can be
unit-tested on known arrays and run vectorised over large chunks of the pool. Scores are
"higher = more worth labelling". Selection (`select`, `batch_diverse`) is kept separate from
scoring so any scorer can be combined with an exploration share and with batch diversity.

Shapes: single-label models give `proba` of shape (n_items, n_classes) whose rows sum to 1;
multi-label (one-vs-rest) models give per-class *positive* probabilities of the same shape,
with `multi_label=True`, where each column is an independent binary decision.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.stats import entropy as _scipy_entropy
from sklearn.metrics.pairwise import cosine_distances

from curation.strategy_names import DEFAULT_STRATEGY as DEFAULT_STRATEGY

RngLike = np.random.Generator | int | None

# predict_proba output is float64 and normalised to ~1e-15; 1e-6 still accepts float32 models.
_ROW_SUM_ATOL = 1e-6
# Shares such as 0.3 * 10 are 3.0000000000000004 in floating point; below this they are integral.
_SHARE_EPS = 1e-9


class Strategy(Protocol):
    """The one signature every registered scorer has, so callers need not special-case any."""

    def __call__(
        self, proba: ArrayLike, /, *, multi_label: bool = False, rng: RngLike = None
    ) -> np.ndarray: ...


def _as_proba(proba: ArrayLike, *, multi_label: bool) -> np.ndarray:
    """Validate once, with an error that says what is wrong and where, instead of scoring junk."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must have shape (n_items, n_classes); got shape {p.shape}")
    if p.shape[0] == 0:
        return p
    if p.shape[1] == 0:
        raise ValueError("proba has no class columns; expected shape (n_items, n_classes >= 1)")
    bad = ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        value = float(p[row, col])
        raise ValueError(f"proba[{row}, {col}] = {value} is not a probability in [0, 1]")
    if not multi_label:
        sums = p.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_ATOL)
        if off.size:
            row = int(off[0])
            raise ValueError(
                f"proba row {row} sums to {sums[row]:.6g}, not 1; single-label rows must be a "
                "distribution (pass multi_label=True for per-class positive probabilities)"
            )
    return p


def _binary(p: np.ndarray) -> np.ndarray:
    """Turn per-class positive probabilities (n, k) into k binary distributions (n, k, 2)."""
    return np.stack([p, 1.0 - p], axis=-1)


def least_confidence(
    proba: ArrayLike, /, *, multi_label: bool = False, rng: RngLike = None
) -> np.ndarray:
    """1 - P(the model's most likely answer): how likely the model's best guess is wrong.

    Multi-label: the most likely label *set* under independent one-vs-rest decisions has
    probability prod_j max(p_j, 1 - p_j). `rng` is unused (shared signature).
    """
    p = _as_proba(proba, multi_label=multi_label)
    if multi_label:
        return 1.0 - np.prod(_binary(p).max(axis=-1), axis=1)
    return 1.0 - p.max(axis=1, initial=0.0)


def margin(proba: ArrayLike, /, *, multi_label: bool = False, rng: RngLike = None) -> np.ndarray:
    """1 - (p1 - p2): items where the top two classes are nearly tied are the most informative.

    Multi-label: the margin of the class closest to 0.5, |p - (1 - p)|, i.e. the single
    decision the model is least sure of. A one-class model is certain everywhere (score 0).
    `rng` is unused (shared signature).
    """
    p = _as_proba(proba, multi_label=multi_label)
    if multi_label:
        return 1.0 - np.abs(2.0 * p - 1.0).min(axis=1, initial=1.0)
    if p.shape[1] < 2:
        return np.zeros(p.shape[0])
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(proba: ArrayLike, /, *, multi_label: bool = False, rng: RngLike = None) -> np.ndarray:
    """Shannon entropy in nats: uncertainty spread over *all* classes, not just the top two.

    Multi-label: the sum of the per-class binary entropies (independent decisions add up).
    `rng` is unused (shared signature).
    """
    p = _as_proba(proba, multi_label=multi_label)
    if p.shape[0] == 0:
        return np.zeros(0)
    if multi_label:
        return _scipy_entropy(_binary(p), axis=-1).sum(axis=1)
    return _scipy_entropy(p, axis=1)


def random_scores(n: int, rng: RngLike = None) -> np.ndarray:
    """Uniform scores in [0, 1): the baseline every other strategy must beat, and cold start."""
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return np.random.default_rng(rng).random(n)


def random_strategy(
    proba: ArrayLike, /, *, multi_label: bool = False, rng: RngLike = None
) -> np.ndarray:
    """`random_scores` under the shared scorer signature (the probabilities are ignored)."""
    n = np.shape(proba)[0] if np.ndim(proba) else 0
    return random_scores(n, rng)


STRATEGIES: dict[str, Strategy] = {
    "random": random_strategy,
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}


def get_strategy(name: str) -> Strategy:
    """Look a scorer up by the name stored on a project, failing clearly on a stale name."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown query strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}"
        ) from None


def _scores_1d(scores: ArrayLike) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional (one per item); got shape {s.shape}")
    return s


def _check_k_and_share(k: int, exploration: float) -> None:
    if k < 0:
        raise ValueError(f"k must be >= 0; got {k}")
    if not 0.0 <= exploration <= 1.0:
        raise ValueError(f"exploration must be a share in [0, 1]; got {exploration!r}")


def _n_explore(k: int, exploration: float, rng: np.random.Generator) -> int:
    """How many of k picks are random: exploration * k, rounded randomly when fractional.

    Randomised rounding keeps the *expected* share exact for small batches: with k=1 and a
    10% share, one request in ten explores, where plain rounding would never explore at all.
    An integral share (0.1 of 10) draws nothing from `rng`.
    """
    share = exploration * k
    base = int(np.floor(share + _SHARE_EPS))
    frac = share - base
    if frac > _SHARE_EPS and rng.random() < frac:
        base += 1
    return min(base, k)


def _top_order(key: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m largest keys, descending, ties by index; O(n) plus O(m log m).

    A full argsort of a million-item pool on every label is wasted work when only a short
    ranked list is served, so partition first and sort only the winners.
    """
    n = key.shape[0]
    if m >= n:
        return np.argsort(-key, kind="stable")
    if m <= 0:
        return np.zeros(0, dtype=np.intp)
    threshold = np.partition(key, n - m)[n - m]
    above = np.flatnonzero(key > threshold)
    tied = np.flatnonzero(key == threshold)[: m - above.size]
    top = np.concatenate([above, tied])
    return top[np.argsort(-key[top], kind="stable")]


def _sort_key(scores: np.ndarray) -> np.ndarray:
    """NaN (e.g. an item the model could not score) ranks below everything, never first."""
    return np.where(np.isnan(scores), -np.inf, scores)


def _explore(n: int, taken: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct indices drawn uniformly from the items not already taken."""
    if count == 0:
        return np.zeros(0, dtype=np.intp)
    free = np.ones(n, dtype=bool)
    free[taken] = False
    return rng.choice(np.flatnonzero(free), size=count, replace=False).astype(np.intp)


def select(
    scores: ArrayLike, k: int, *, exploration: float = 0.1, rng: RngLike = None
) -> np.ndarray:
    """Pick k item indices: mostly the highest scores, plus a random share from the rest.

    Pure uncertainty sampling only ever sees the model's blind spots as the model imagines
    them; the `exploration` share, drawn uniformly from the items not picked, keeps the
    labelled set representative. Returns the exploited indices (best first, ties by index,
    NaN last) followed by the explored ones. k > n returns every item; deterministic for a
    seeded `rng`.
    """
    s = _scores_1d(scores)
    _check_k_and_share(k, exploration)
    n = s.shape[0]
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    gen = np.random.default_rng(rng)
    n_random = _n_explore(k, exploration, gen)
    exploit = _top_order(_sort_key(s), k - n_random).astype(np.intp)
    return np.concatenate([exploit, _explore(n, exploit, n_random, gen)])


def batch_diverse(
    scores: ArrayLike,
    features: ArrayLike | sp.spmatrix | sp.sparray,
    k: int,
    *,
    candidates: int | None = None,
    exploration: float = 0.1,
    rng: RngLike = None,
) -> np.ndarray:
    """Pick k uncertain items that are also unlike each other, so a batch is not k near-duplicates.

    Takes the top `candidates` items by score (default 10 * k), starts from the best one, then
    greedily adds the candidate maximising score * (cosine distance to the nearest item already
    picked), a score-weighted k-center greedy. Ties go to the farther item, then the higher
    score, then the lower index, so the result is deterministic. `features` may be dense or
    scipy.sparse (e.g. hashed text). The `exploration` share is drawn as in `select`. Scores
    must be non-negative (all uncertainty scores are); NaN counts as 0.
    """
    s = _scores_1d(scores)
    _check_k_and_share(k, exploration)
    n = s.shape[0]
    dense = not sp.issparse(features)
    X = np.asarray(features, dtype=np.float64) if dense else sp.csr_matrix(features)
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(
            f"features must have one row per score: shape (n_items={n}, n_features); "
            f"got shape {X.shape}"
        )
    finite = s[~np.isnan(s)]
    if np.isinf(finite).any() or (finite < 0).any():
        raise ValueError("batch_diverse needs finite, non-negative scores (NaN counts as 0)")
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    gen = np.random.default_rng(rng)
    n_random = _n_explore(k, exploration, gen)
    k_diverse = k - n_random
    if candidates is None:
        candidates = 10 * k_diverse
    if candidates < k_diverse:
        raise ValueError(f"candidates ({candidates}) must be at least the batch size ({k_diverse})")

    pool = _top_order(_sort_key(s), min(candidates, n)).astype(np.intp)
    picked = _greedy_diverse(np.nan_to_num(s[pool], nan=0.0), X[pool], k_diverse)
    chosen = pool[picked]
    return np.concatenate([chosen, _explore(n, chosen, n_random, gen)])


def _greedy_diverse(weight: np.ndarray, X: np.ndarray | sp.csr_matrix, k: int) -> np.ndarray:
    """Score-weighted k-center greedy over a small candidate pool; O(len(pool) * k) distances."""
    m = weight.shape[0]
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    picked = [0]  # the pool is sorted by score: start from the most uncertain item
    nearest = np.full(m, np.inf)
    is_picked = np.zeros(m, dtype=bool)
    is_picked[0] = True
    rank = np.arange(m)
    while len(picked) < k:
        d = cosine_distances(X, X[picked[-1] : picked[-1] + 1]).ravel()
        nearest = np.minimum(nearest, np.clip(d, 0.0, 2.0))
        gain = weight * nearest
        # lexsort: last key is primary; -rank makes the lowest index win among full ties.
        order = np.lexsort((-rank, weight, nearest, gain))
        order = order[~is_picked[order]]
        best = int(order[-1])
        picked.append(best)
        is_picked[best] = True
    return np.asarray(picked, dtype=np.intp)
