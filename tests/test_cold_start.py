"""Cold-start selection on small arrays whose dense regions and outliers are known (no database)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from curation.cold_start import typical_picks
from curation.featurizers import featurizer_for
from curation.strategies import batch_diverse

CENTRES = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def blobs_with_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight blobs of 60 points (directions near the axes), then 6 far-off outliers:
    returns (rows, blob of each row; -1 for an outlier)."""
    rng = np.random.default_rng(seed)
    blobs = [c + 0.05 * rng.standard_normal((60, 3)) for c in CENTRES]
    outliers = rng.standard_normal((6, 3))
    outliers[:, 0] = -np.abs(outliers[:, 0]) - 1.0  # pointing away from every blob
    X = np.vstack([*blobs, outliers])
    blob = np.repeat([0, 1, 2, -1], [60, 60, 60, 6])
    return X, blob


def test_typical_picks_come_one_per_dense_region_where_k_centre_picks_outliers():
    X, blob = blobs_with_outliers()

    picks = typical_picks(X, 3, seed=0)
    k_centre = batch_diverse(np.ones(len(X)), X, 6, candidates=len(X), exploration=0.0)

    assert sorted(blob[picks]) == [0, 1, 2]
    assert (blob[k_centre] == -1).sum() >= 3  # most of greedy k-centre's picks are outliers


def test_typical_picks_are_the_most_central_points_of_their_blob():
    X, blob = blobs_with_outliers()
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)

    for index in typical_picks(X, 3, seed=0):
        members = unit[blob == blob[index]]
        distance = np.linalg.norm(members - members.mean(axis=0), axis=1)
        # Among the quarter of the blob closest to its centre.
        assert np.linalg.norm(unit[index] - members.mean(axis=0)) <= np.quantile(distance, 0.25)


def test_a_longer_budget_still_leaves_the_outliers_for_last():
    X, blob = blobs_with_outliers()

    picks = typical_picks(X, 30, seed=0)

    assert len(set(picks.tolist())) == 30
    assert not (blob[picks[:20]] == -1).any()  # the outliers' clusters are tiny: they come last


def test_regions_already_labelled_come_after_the_uncovered_ones():
    X, blob = blobs_with_outliers()
    labelled = X[blob == 0][:2]

    picks = typical_picks(X, 2, labelled=labelled, seed=0)

    assert sorted(blob[picks]) == [1, 2]


def test_the_same_seed_picks_the_same_items():
    X, _ = blobs_with_outliers()
    labelled = X[:3]

    first = typical_picks(X, 20, labelled=labelled, seed=7)
    again = typical_picks(X, 20, labelled=labelled, seed=7)

    np.testing.assert_array_equal(first, again)


def test_fewer_items_than_the_budget_gives_every_item_once():
    X, _ = blobs_with_outliers()

    picks = typical_picks(X[:7], 50, seed=0)

    assert sorted(picks.tolist()) == list(range(7))
    assert typical_picks(X[:1], 5, seed=0).tolist() == [0]
    assert typical_picks(X[:0], 5, seed=0).tolist() == []


def test_duplicated_rows_are_picked_once_each_and_fewer_distinct_rows_than_clusters_is_fine():
    X = np.repeat(CENTRES, [30, 20, 10], axis=0)  # three distinct rows, 60 items

    picks = typical_picks(X, 5, seed=0)

    assert len(set(picks.tolist())) == 5
    # The largest group first: its rows are the most typical (30 identical neighbours).
    assert picks[0] < 30
    assert {0 if i < 30 else 1 if i < 50 else 2 for i in picks[:3]} == {0, 1, 2}


@pytest.mark.parametrize("budget", [2, 6])
def test_hashed_text_picks_ordinary_sentences_of_each_topic_before_short_oddities(budget):
    rng = np.random.default_rng(0)
    flights = ["flight", "delayed", "gate", "crew", "seat", "boarding", "plane", "hours", "late"]
    bags = ["bag", "luggage", "lost", "suitcase", "claim", "baggage", "carousel", "missing"]
    texts = [" ".join(rng.choice(flights, 8)) for _ in range(80)]
    texts += [" ".join(rng.choice(bags, 8)) for _ in range(80)]
    odd = ["ok", "lol", "?!", "#fail", "thx", "meh"]
    X = featurizer_for("text").transform(texts + odd)
    assert sp.issparse(X)

    picks = typical_picks(X, budget, seed=0)

    assert (picks < 160).all()  # no short oddity
    assert {int(i >= 80) for i in picks[:2]} == {0, 1}  # one of each topic first


def test_labelled_rows_may_be_sparse_while_candidates_are_too():
    texts = ["the flight was late again"] * 5 + ["my bag is lost"] * 5
    X = featurizer_for("text").transform(texts)

    picks = typical_picks(X[:8], 1, labelled=X[8:], seed=0)

    assert picks.tolist() and picks[0] < 5  # the uncovered topic
