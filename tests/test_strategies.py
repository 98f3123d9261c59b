"""Query strategies on small arrays whose answers are worked out by hand (no database)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from curation.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    batch_diverse,
    entropy,
    get_strategy,
    least_confidence,
    margin,
    random_scores,
    select,
)
from curation.strategy_names import STRATEGY_NAMES

BINARY = [[0.5, 0.5], [0.9, 0.1], [0.6, 0.4]]


def descending(scores: np.ndarray) -> list[int]:
    return np.argsort(-scores, kind="stable").tolist()


# --- scorers, single-label -------------------------------------------------------------------


def test_margin_ranks_a_tie_first_and_a_confident_item_last():
    scores = margin(BINARY)
    np.testing.assert_allclose(scores, [1.0, 0.2, 0.8], atol=1e-12)
    assert descending(scores) == [0, 2, 1]


def test_margin_uses_only_the_two_most_likely_classes():
    # 0.5 - 0.3 = 0.2 wherever the top two sit; the third class does not matter.
    scores = margin([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(scores, [0.8, 0.8, 1.0, 0.0], atol=1e-12)


def test_least_confidence_is_one_minus_the_top_probability():
    np.testing.assert_allclose(least_confidence(BINARY), [0.5, 0.1, 0.4], atol=1e-12)
    np.testing.assert_allclose(least_confidence([[0.2, 0.3, 0.5]]), [0.5], atol=1e-12)


def test_entropy_matches_the_shannon_formula_in_nats():
    rows = [[0.5, 0.5], [0.9, 0.1], [0.6, 0.4], [1.0, 0.0]]
    expected = [-sum(p * math.log(p) for p in row if p > 0) for row in rows]
    np.testing.assert_allclose(entropy(rows), expected, rtol=0, atol=1e-9)
    assert entropy([[1 / 3, 1 / 3, 1 / 3]])[0] == pytest.approx(math.log(3), abs=1e-9)


def test_entropy_can_disagree_with_margin_because_it_sees_every_class():
    # Same top-two margin (0.1), but the second row spreads its remaining mass.
    proba = [[0.45, 0.35, 0.20], [0.40, 0.30, 0.30]]
    np.testing.assert_allclose(margin(proba), [0.9, 0.9], atol=1e-12)
    assert entropy(proba)[1] > entropy(proba)[0]


def test_a_model_that_knows_only_one_class_is_certain_about_every_item():
    one_class = [[1.0], [1.0]]
    for strategy in (least_confidence, margin, entropy):
        np.testing.assert_allclose(strategy(one_class), [0.0, 0.0], atol=1e-12)


def test_an_empty_pool_scores_to_an_empty_array():
    for name, strategy in STRATEGIES.items():
        assert strategy(np.zeros((0, 3)), rng=0).shape == (0,), name


# --- scorers, multi-label --------------------------------------------------------------------


def test_multi_label_margin_looks_at_the_class_closest_to_one_half():
    proba = [[0.9, 0.45], [0.99, 0.01], [0.5, 0.0]]
    np.testing.assert_allclose(margin(proba, multi_label=True), [0.9, 0.02, 1.0], atol=1e-12)


def test_multi_label_entropy_is_the_sum_of_binary_entropies():
    def h(p: float) -> float:
        return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)

    proba = [[0.9, 0.45, 0.0], [0.5, 0.5, 0.5]]
    expected = [h(0.9) + h(0.45) + h(0.0), 3 * math.log(2)]
    np.testing.assert_allclose(entropy(proba, multi_label=True), expected, rtol=0, atol=1e-9)


def test_multi_label_least_confidence_is_one_minus_the_likeliest_label_set():
    # Likeliest set for [0.9, 0.3]: {class 0} with probability 0.9 * 0.7.
    proba = [[0.9, 0.3], [1.0, 0.0]]
    np.testing.assert_allclose(
        least_confidence(proba, multi_label=True), [1 - 0.63, 0.0], atol=1e-12
    )


def test_multi_label_rows_need_not_sum_to_one_but_single_label_rows_must():
    proba = [[0.9, 0.8], [0.1, 0.2]]
    assert margin(proba, multi_label=True).shape == (2,)
    with pytest.raises(ValueError, match=r"row 0 sums to 1\.7.*multi_label=True"):
        margin(proba)


@pytest.mark.parametrize(
    ("proba", "message"),
    [
        ([0.5, 0.5], r"shape \(n_items, n_classes\)"),
        ([[0.5, 0.5], [1.2, -0.2]], r"proba\[1, 0\] = 1\.2"),
        ([[0.5, 0.5], [np.nan, 0.5]], r"proba\[1, 0\] = nan"),
        (np.zeros((2, 0)), "no class columns"),
    ],
)
def test_malformed_probabilities_are_refused_with_their_location(proba, message):
    with pytest.raises(ValueError, match=message):
        entropy(proba, multi_label=True)


def test_random_scores_are_uniform_and_reproducible_for_a_seed():
    a, b = random_scores(1000, np.random.default_rng(7)), random_scores(1000, 7)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0.0 and a.max() < 1.0
    assert 0.45 < a.mean() < 0.55
    assert not np.array_equal(a, random_scores(1000, 8))


# --- registry --------------------------------------------------------------------------------


def test_the_registry_offers_the_four_strategies_with_margin_as_default():
    assert set(STRATEGIES) == {"random", "least_confidence", "margin", "entropy"}
    assert DEFAULT_STRATEGY == "margin"
    assert get_strategy(DEFAULT_STRATEGY) is margin


def test_the_names_offered_without_the_numerical_libraries_are_the_registrys():
    assert tuple(STRATEGIES) == STRATEGY_NAMES


def test_every_registered_strategy_shares_one_call_signature():
    for name, strategy in STRATEGIES.items():
        scores = strategy(BINARY, multi_label=False, rng=3)
        assert scores.shape == (3,), name
        assert np.all(scores >= 0), name
    np.testing.assert_array_equal(STRATEGIES["random"](BINARY, rng=3), random_scores(3, 3))


def test_an_unknown_strategy_name_is_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="unknown query strategy 'bald'.*entropy.*margin"):
        get_strategy("bald")


# --- select ----------------------------------------------------------------------------------


def test_select_without_exploration_takes_the_top_scores_best_first():
    scores = [0.1, 0.9, 0.5, 0.7, 0.3]
    assert select(scores, 3, exploration=0.0, rng=0).tolist() == [1, 3, 2]


def test_select_breaks_ties_by_item_order():
    scores = [0.5, 0.9, 0.5, 0.5, 0.9]
    assert select(scores, 4, exploration=0.0, rng=0).tolist() == [1, 4, 0, 2]


def test_select_ranks_unscorable_items_last():
    scores = [np.nan, 0.2, np.nan, 0.1]
    assert select(scores, 4, exploration=0.0, rng=0).tolist() == [1, 3, 0, 2]
    assert select(scores, 1, exploration=0.0, rng=0).tolist() == [1]


def test_select_returns_every_item_when_asked_for_more_than_exist():
    picked = select([0.2, 0.8, 0.5], 10, exploration=0.0, rng=0)
    assert picked.tolist() == [1, 2, 0]


def test_select_with_exploration_still_returns_every_item_once_when_k_exceeds_n():
    picked = select([0.2, 0.8, 0.5], 10, exploration=0.5, rng=0)
    assert sorted(picked.tolist()) == [0, 1, 2]


def test_select_of_zero_items_or_from_an_empty_pool_is_empty():
    assert select([0.3, 0.4], 0, rng=0).tolist() == []
    assert select([], 5, rng=0).tolist() == []


def test_select_draws_exactly_the_exploration_share_from_outside_the_top():
    scores = np.linspace(1.0, 0.0, 100)  # item i is the i-th best
    picked = select(scores, 10, exploration=0.3, rng=np.random.default_rng(42))
    assert len(picked) == len(set(picked.tolist())) == 10
    assert picked[:7].tolist() == list(range(7))
    assert all(i >= 7 for i in picked[7:])


def test_select_explores_a_different_random_share_for_a_different_seed():
    scores = np.linspace(1.0, 0.0, 1000)
    first = select(scores, 20, exploration=0.5, rng=1)
    np.testing.assert_array_equal(first, select(scores, 20, exploration=0.5, rng=1))
    assert not np.array_equal(first, select(scores, 20, exploration=0.5, rng=2))


def test_select_keeps_the_expected_exploration_share_when_batches_are_tiny():
    # 0.1 * 1 item: one request in ten explores instead of rounding down to never.
    rng = np.random.default_rng(123)
    scores = np.linspace(1.0, 0.0, 50)
    explored = sum(select(scores, 1, exploration=0.1, rng=rng)[0] != 0 for _ in range(2000))
    assert 140 <= explored <= 260


def test_select_with_full_exploration_is_a_uniform_sample():
    rng = np.random.default_rng(5)
    counts = np.zeros(10)
    for _ in range(2000):
        counts[select(np.arange(10.0), 2, exploration=1.0, rng=rng)] += 1
    assert counts.min() > 300 and counts.max() < 500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -1}, "k must be >= 0"),
        ({"k": 2, "exploration": 1.5}, r"exploration must be a share in \[0, 1\]"),
        ({"k": 2, "exploration": -0.1}, r"exploration must be a share in \[0, 1\]"),
    ],
)
def test_select_refuses_a_negative_size_or_a_share_outside_zero_to_one(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select([0.1, 0.2, 0.3], rng=0, **kwargs)


def test_select_refuses_scores_that_are_not_one_per_item():
    with pytest.raises(ValueError, match="one-dimensional"):
        select([[0.1, 0.2]], 1, rng=0)


# --- batch_diverse ---------------------------------------------------------------------------

# Items 0 and 1 are near-duplicates (cluster A) and the most uncertain; item 2 sits in cluster B
# with a slightly lower score; item 3 is a confident near-duplicate of item 2.
CLUSTER_SCORES = [0.95, 0.94, 0.80, 0.10]
CLUSTER_FEATURES = [[1.0, 0.0], [0.99, 0.01], [0.0, 1.0], [0.01, 0.99]]


def test_plain_selection_would_serve_two_near_duplicates():
    assert select(CLUSTER_SCORES, 2, exploration=0.0, rng=0).tolist() == [0, 1]


def test_batch_diverse_takes_one_item_from_each_cluster_instead():
    picked = batch_diverse(CLUSTER_SCORES, CLUSTER_FEATURES, 2, exploration=0.0, rng=0)
    assert picked.tolist() == [0, 2]


def test_batch_diverse_gives_the_same_batch_for_sparse_features():
    sparse = sp.csr_matrix(CLUSTER_FEATURES)
    picked = batch_diverse(CLUSTER_SCORES, sparse, 2, exploration=0.0, rng=0)
    assert picked.tolist() == [0, 2]
    coo = batch_diverse(CLUSTER_SCORES, sp.coo_matrix(CLUSTER_FEATURES), 2, exploration=0.0)
    assert coo.tolist() == [0, 2]


def test_batch_diverse_only_considers_the_top_candidates():
    # With one candidate per pick, diversity has nothing to choose from: plain top-k.
    picked = batch_diverse(CLUSTER_SCORES, CLUSTER_FEATURES, 2, candidates=2, exploration=0.0)
    assert picked.tolist() == [0, 1]


def test_batch_diverse_spreads_out_even_when_every_score_is_zero():
    features = [[1.0, 0.0], [1.0, 0.001], [0.0, 1.0]]
    picked = batch_diverse([0.0, 0.0, 0.0], features, 2, exploration=0.0)
    assert picked.tolist() == [0, 2]


def test_batch_diverse_weighs_uncertainty_against_distance():
    # Item 2 is farther from item 0 but so confident that item 1's score wins the product.
    features = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    picked = batch_diverse([0.9, 0.8, 0.05], features, 2, exploration=0.0)
    assert picked.tolist() == [0, 1]


def test_batch_diverse_is_deterministic_for_a_fixed_seed_and_explores_outside_the_batch():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 8))
    scores = rng.random(300)
    a = batch_diverse(scores, features, 10, exploration=0.2, rng=11)
    b = batch_diverse(scores, features, 10, exploration=0.2, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10
    top_100 = set(np.argsort(-scores, kind="stable")[:100].tolist())
    assert set(a[:8].tolist()) <= top_100


def test_batch_diverse_handles_empty_and_oversized_requests():
    assert batch_diverse([], np.zeros((0, 2)), 3, rng=0).tolist() == []
    assert batch_diverse(CLUSTER_SCORES, CLUSTER_FEATURES, 0, rng=0).tolist() == []
    picked = batch_diverse(CLUSTER_SCORES, CLUSTER_FEATURES, 9, exploration=0.0)
    assert sorted(picked.tolist()) == [0, 1, 2, 3]


def test_batch_diverse_treats_unscorable_items_as_least_uncertain():
    scores = [np.nan, 0.5, 0.4]
    features = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    assert batch_diverse(scores, features, 1, exploration=0.0).tolist() == [1]


@pytest.mark.parametrize(
    ("scores", "features", "kwargs", "message"),
    [
        ([0.1, 0.2], [[1.0, 0.0]], {}, r"one row per score.*got shape \(1, 2\)"),
        ([0.1, -0.2], [[1.0], [0.0]], {}, "non-negative"),
        ([0.1, np.inf], [[1.0], [0.0]], {}, "finite"),
        ([0.1, 0.2], [[1.0], [0.0]], {"candidates": 1}, r"candidates \(1\).*batch size \(2\)"),
    ],
)
def test_batch_diverse_refuses_inconsistent_input(scores, features, kwargs, message):
    with pytest.raises(ValueError, match=message):
        batch_diverse(scores, features, 2, exploration=0.0, **kwargs)
