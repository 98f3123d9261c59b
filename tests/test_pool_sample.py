"""The trainer's pool sample: blocks that rotate and lose items without copying everything."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from curation.pool_sample import BLOCK_ROWS, SAMPLE_ROTATE, PoolSample


def rows(ids: list[int]) -> sp.csr_matrix:
    """One row per id whose only value is the id, so rows can be traced after copies."""
    n = len(ids)
    return sp.csr_matrix((np.array(ids, dtype=np.float32), (np.arange(n), np.zeros(n))), (n, 4))


def test_rotation_drops_exactly_the_oldest_items_even_from_the_middle_of_a_block():
    sample = PoolSample()
    sample.append(list(range(1000)), rows(list(range(1000))))
    sample.append(list(range(1000, 2000)), rows(list(range(1000, 2000))))
    assert sample.drop_oldest(SAMPLE_ROTATE) == SAMPLE_ROTATE
    assert sample.size() == 2000 - SAMPLE_ROTATE
    assert sample.ids()[0] == SAMPLE_ROTATE
    assert sample.matrix()[:, 0].toarray().ravel().tolist() == sample.ids()


def test_small_additions_merge_into_blocks_of_at_most_block_rows():
    sample = PoolSample()
    for start in range(0, 3000, 100):
        ids = list(range(start, start + 100))
        sample.append(ids, rows(ids))
    assert len(sample.blocks) == 3000 // BLOCK_ROWS
    assert all(len(b.ids) <= BLOCK_ROWS for b in sample.blocks)
    assert sample.ids() == list(range(3000))


def test_dropping_answered_items_keeps_every_other_row_with_its_id():
    sample = PoolSample()
    sample.append(list(range(10)), rows(list(range(10))))
    sample.drop({3, 7})
    assert sample.ids() == [0, 1, 2, 4, 5, 6, 8, 9]
    assert sample.matrix()[:, 0].toarray().ravel().tolist() == sample.ids()
    assert set(sample.rows([4, 7])) == {4}


def test_the_training_set_reuses_the_last_stack_and_matches_a_fresh_one_after_any_change():
    from curation import trainer
    from curation.featurizers import featurizer_for
    from curation.learner import IncrementalLearner

    featurizer = featurizer_for("text")
    state = trainer.ProjectState(
        1, (("a", "b"), False, "text"), featurizer, IncrementalLearner(["a", "b"])
    )

    def add(item_id: int, name: str) -> None:
        state.rows[item_id] = featurizer.transform([f"text number {item_id} {name}"])
        state.labels[item_id] = name

    def fresh() -> np.ndarray:
        ids = sorted(state.labels)
        return sp.vstack([state.rows[i] for i in ids]).toarray()

    for item_id in (5, 2, 9):
        add(item_id, "a")
    first, _ = trainer.training_set(state)
    assert trainer.training_set(state)[0] is first  # unchanged labels: the same stack
    add(1, "b")  # a new label below the others' ids
    add(7, "b")
    X, y = trainer.training_set(state)
    assert np.array_equal(X.toarray(), fresh()) and y == ["b", "a", "a", "b", "a"]
    del state.labels[2]  # an answer deleted: rebuilt
    X, _ = trainer.training_set(state)
    assert np.array_equal(X.toarray(), fresh())
