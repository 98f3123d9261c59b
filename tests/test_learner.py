"""The incremental learner and its model file, on scikit-learn's bundled digits (no database)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.metrics import f1_score

from curation.artifacts import MAGIC, ModelFileError, load_learner, read_model_file, save_learner
from curation.learner import IncrementalLearner, wilson_interval
from curation.strategies import margin

NAMES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    test, pool = order[:500], order[500:]
    return {"X": X / 16.0, "y": np.array(NAMES)[y], "test": test, "pool": pool}


def trained(digits, n: int) -> IncrementalLearner:
    learner = IncrementalLearner(NAMES)
    idx = digits["pool"][:n]
    learner.update(digits["X"][idx], list(digits["y"][idx]))
    return learner


def test_300_labels_reach_85_percent_on_held_out_digits_and_an_update_takes_well_under_1s(digits):
    learner = trained(digits, 299)
    nxt = digits["pool"][299:300]
    start = time.perf_counter()
    learner.update(digits["X"][nxt], list(digits["y"][nxt]))
    elapsed = time.perf_counter() - start
    accuracy = np.mean(
        np.array(learner.predict(digits["X"][digits["test"]])) == digits["y"][digits["test"]]
    )
    assert accuracy > 0.85
    assert elapsed < 1.0, f"update at 300 labels took {elapsed:.3f} s"  # ~3 ms measured


def accuracy_after(digits, strategy: str, seed: int, n_labels: int = 100) -> float:
    """Label one item at a time; the first 10 are random (cold start), then `strategy` picks."""
    X, y = digits["X"], digits["y"]
    unlabelled = list(np.random.default_rng(seed).permutation(digits["pool"]))
    learner = IncrementalLearner(NAMES)
    for step in range(n_labels):
        pick = 0
        if strategy == "margin" and step >= 10:
            pick = int(np.argmax(margin(learner.predict_proba(X[unlabelled]))))
        item = unlabelled.pop(pick)
        learner.update(X[[item]], [y[item]])
    return float(np.mean(np.array(learner.predict(X[digits["test"]])) == y[digits["test"]]))


def test_margin_order_beats_random_order_at_100_labels_averaged_over_3_seeds(digits):
    # Measured: margin 0.924 vs random 0.859 mean test accuracy; each seed wins individually too,
    # but only the mean (with a 2-point margin) is asserted so the test is not seed-fragile.
    margin_acc = np.mean([accuracy_after(digits, "margin", s) for s in range(3)])
    random_acc = np.mean([accuracy_after(digits, "random", s) for s in range(3)])
    assert margin_acc > random_acc + 0.02, (margin_acc, random_acc)


def test_predict_proba_has_one_column_per_class_and_rows_summing_to_one(digits):
    proba = trained(digits, 50).predict_proba(digits["X"][:7])
    assert proba.shape == (7, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_before_any_label_the_learner_is_cold_and_predicts_a_uniform_prior(digits):
    learner = IncrementalLearner(NAMES)
    assert learner.is_cold()
    np.testing.assert_allclose(learner.predict_proba(digits["X"][:3]), 0.1)
    assert learner.estimated_accuracy() is None


def test_one_class_seen_is_not_fitted_and_returns_the_smoothed_prior(digits):
    learner = IncrementalLearner(["a", "b", "c"])
    learner.update(np.ones((2, 4)), ["a", ["a"]])
    np.testing.assert_allclose(learner.predict_proba(np.zeros((1, 4))), [[0.6, 0.2, 0.2]])


def test_the_learner_can_rank_from_two_classes_and_names_the_classes_it_never_saw():
    learner = IncrementalLearner(["a", "b", "c"])
    assert not learner.can_rank() and learner.unseen_classes() == ["a", "b", "c"]
    learner.update(np.eye(3)[[0, 0]], ["a", "a"])
    assert not learner.can_rank() and learner.unseen_classes() == ["b", "c"]
    learner.update(np.eye(3)[[1]], ["b"])
    assert learner.can_rank() and learner.unseen_classes() == ["c"]


def test_a_multi_label_learner_can_rank_once_a_class_has_a_positive_and_a_negative():
    learner = IncrementalLearner(["a", "b"], multi_label=True)
    learner.update(np.eye(2)[[0]], [["a", "b"]])
    assert not learner.can_rank()  # every class positive on every label: nothing to tell apart
    learner.update(np.eye(2)[[1]], [["b"]])
    assert learner.can_rank() and learner.unseen_classes() == []
    other = IncrementalLearner(["a", "b"], multi_label=True)
    other.update(np.eye(2)[[0, 1]], [["a"], []])
    assert other.can_rank() and other.unseen_classes() == ["b"]


def test_learner_stays_cold_until_every_class_has_three_labels(digits):
    learner = IncrementalLearner(["a", "b"])
    learner.update(np.eye(2)[[0, 0, 0, 1, 1]], ["a", "a", "a", "b", "b"])
    assert learner.is_cold()
    learner.update(np.eye(2)[[1]], ["b"])
    assert not learner.is_cold()


def test_classes_never_labelled_get_zero_probability(digits):
    idx = [i for i in digits["pool"][:200] if digits["y"][i] in ("0", "1", "2")]
    learner = IncrementalLearner(NAMES)
    learner.update(digits["X"][idx], list(digits["y"][idx]))
    proba = learner.predict_proba(digits["X"][digits["test"]])
    assert proba[:, 3:].max() == 0.0
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_bad_labels_are_refused_with_the_row_and_change_nothing(digits):
    learner = trained(digits, 30)
    before = learner.predict_proba(digits["X"][:5])
    with pytest.raises(ValueError, match=r"label #1: unknown class 'eleven'"):
        learner.update(digits["X"][:2], ["1", "eleven"])
    with pytest.raises(ValueError, match="has 3 features; this learner uses 64"):
        learner.update(np.zeros((1, 3)), ["1"])
    assert learner.n_labels == 30
    np.testing.assert_array_equal(learner.predict_proba(digits["X"][:5]), before)


def test_multi_label_one_vs_rest_reaches_micro_f1_above_0_6():
    X, Y = make_multilabel_classification(
        n_samples=600, n_features=20, n_classes=5, n_labels=2, random_state=0
    )
    names = list("abcde")
    labels = [[names[j] for j in np.flatnonzero(row)] for row in Y]
    learner = IncrementalLearner(names, multi_label=True)
    for start in range(0, 400, 50):
        learner.update(X[start : start + 50], labels[start : start + 50])
    proba = learner.predict_proba(X[400:])
    assert proba.shape == (200, 5)
    assert f1_score(Y[400:], proba >= 0.5, average="micro") > 0.6
    estimate = learner.estimated_accuracy()
    assert estimate is not None and 0.0 <= estimate <= 1.0


@pytest.mark.parametrize("n_classes_seen", [2, 3])
def test_predict_proba_matches_scikit_learn_for_dense_and_float32_sparse_rows(
    digits, n_classes_seen
):
    idx = [i for i in digits["pool"] if digits["y"][i] in NAMES[:n_classes_seen]][:60]
    learner = IncrementalLearner(NAMES)
    learner.update(digits["X"][idx], list(digits["y"][idx]))
    model = learner._model
    X = digits["X"][:40]
    expected = np.zeros((40, 10))
    expected[:, model.classes_] = model.predict_proba(X)
    np.testing.assert_allclose(learner.predict_proba(X), expected, rtol=0, atol=1e-12)
    sparse32 = sp.csr_matrix(X.astype(np.float32))
    np.testing.assert_allclose(learner.predict_proba(sparse32), expected, rtol=0, atol=1e-5)


def test_multi_label_predict_proba_matches_each_scikit_learn_model():
    X, Y = make_multilabel_classification(n_samples=200, n_features=20, n_classes=4, random_state=1)
    names = list("abcd")
    learner = IncrementalLearner(names, multi_label=True)
    learner.update(X, [[names[j] for j in np.flatnonzero(row)] for row in Y])
    expected = np.column_stack([m.predict_proba(X)[:, 1] for m in learner._ovr])
    np.testing.assert_allclose(learner.predict_proba(X), expected, rtol=0, atol=1e-12)


def test_estimated_accuracy_calls_between_folds_once_per_fold_and_scores_like_cross_val_score(
    digits,
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    learner = trained(digits, 200)
    calls = []
    estimate = learner.estimated_accuracy(between_folds=lambda: calls.append(1))
    X, y = learner._X, learner._Y  # dense digits: every column is used
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    params = {**learner.params, "warm_start": False}
    expected = cross_val_score(LogisticRegression(**params), X, y.argmax(axis=1), cv=cv).mean()
    assert len(calls) == 5
    assert estimate == pytest.approx(expected, abs=1e-12)


def test_multi_label_class_with_one_value_seen_predicts_a_smoothed_constant():
    learner = IncrementalLearner(["x", "y"], multi_label=True)
    learner.update(np.eye(2), [["x"], []])
    proba = learner.predict_proba(np.eye(2))
    np.testing.assert_allclose(proba[:, 1], 0.25)  # 0 of 2 positive -> (0 + 1) / (2 + 2)


def test_estimated_accuracy_is_none_with_too_few_labels_then_a_number_in_0_1(digits):
    assert trained(digits, 12).estimated_accuracy() is None  # some digit has < 2 labels
    estimate = trained(digits, 200).estimated_accuracy()
    assert estimate is not None and 0.8 <= estimate <= 1.0


def test_wilson_interval_matches_the_closed_form_known_value():
    low, high = wilson_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=1e-3)
    assert high == pytest.approx(0.8666, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


@pytest.mark.parametrize("total", [1, 7, 24, 47, 100, 333])
def test_a_wilson_interval_holds_its_own_accuracy_at_the_ends(total):
    """All right or all wrong: the interval reaches exactly 1 or 0 (floating point left 47 of
    47 outside its own interval)."""
    assert wilson_interval(total, total)[1] == 1.0
    assert wilson_interval(0, total)[0] == 0.0


# --- model files -----------------------------------------------------------------------------

FEATURIZER = {"featurizer_name": "digits-raw", "featurizer_version": 1}


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_saved_model_loads_and_predicts_exactly_like_the_original(digits, tmp_path, multi_label):
    if multi_label:
        learner = IncrementalLearner(["even", "small"], multi_label=True)
        idx = digits["pool"][:120]
        labels = [
            [n for n, on in (("even", int(d) % 2 == 0), ("small", int(d) < 5)) if on]
            for d in digits["y"][idx]
        ]
        learner.update(digits["X"][idx], labels)
    else:
        learner = trained(digits, 100)
    path = tmp_path / "model.dpm"
    save_learner(learner, path, metrics={"cv_accuracy": 0.9}, **FEATURIZER)
    loaded, header = read_model_file(path, n_features=64, **FEATURIZER)
    X = digits["X"][digits["test"]]
    np.testing.assert_allclose(
        loaded.predict_proba(X), learner.predict_proba(X), rtol=0, atol=1e-12
    )
    assert header["metrics"] == {"cv_accuracy": 0.9}
    assert loaded.n_labels == learner.n_labels
    np.testing.assert_array_equal(loaded.label_counts, learner.label_counts)
    assert list(tmp_path.iterdir()) == [path]  # the temp file was renamed, nothing left behind


def test_a_loaded_model_refuses_update_but_fit_on_all_labels_continues_training(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 100), path, **FEATURIZER)
    loaded = load_learner(path)
    with pytest.raises(RuntimeError, match="call fit"):
        loaded.update(digits["X"][:1], ["0"])
    idx = digits["pool"][:150]
    loaded.fit(digits["X"][idx], list(digits["y"][idx]))
    assert loaded.n_labels == 150


def test_a_model_file_for_another_featurizer_is_refused(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 50), path, **FEATURIZER)
    with pytest.raises(ModelFileError, match="featurizer version 1, expected 2"):
        load_learner(path, featurizer_name="digits-raw", featurizer_version=2)


def test_a_tampered_payload_fails_the_checksum(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 50), path, **FEATURIZER)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_learner(path)


def test_a_truncated_model_file_is_refused(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 50), path, **FEATURIZER)
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(ModelFileError, match="truncated"):
        load_learner(path)
    path.write_bytes(blob[:20])
    with pytest.raises(ModelFileError, match="truncated"):
        load_learner(path)


def rewrite(path: Path, header_changes: dict, payload: bytes | None = None) -> None:
    """Rewrite a model file with a changed header and/or payload and a *valid* checksum."""
    blob = path.read_bytes()
    (head_len,) = struct.unpack_from("<Q", blob, len(MAGIC))
    start = len(MAGIC) + 8
    header = json.loads(blob[start : start + head_len])
    payload = blob[start + head_len :] if payload is None else payload
    header.update(payload_sha256=hashlib.sha256(payload).hexdigest(), payload_bytes=len(payload))
    header.update(header_changes)
    head = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + payload)


def test_an_unknown_format_version_is_refused(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 50), path, **FEATURIZER)
    rewrite(path, {"format_version": 99})
    with pytest.raises(ModelFileError, match="unknown model format version 99"):
        load_learner(path)


def test_an_object_array_is_never_unpickled_even_with_a_valid_checksum(digits, tmp_path):
    path = tmp_path / "m.dpm"
    save_learner(trained(digits, 50), path, **FEATURIZER)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        model_classes=np.array([0, 1]),
        coef=np.array([{"evil": 1}], dtype=object),
        intercept=np.zeros(2),
        label_counts=np.zeros(10, dtype=np.int64),
    )
    rewrite(path, {}, buffer.getvalue())
    with pytest.raises(ModelFileError, match="bad array payload"):
        load_learner(path)
