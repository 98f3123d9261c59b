"""The model in the loop earns its keep: on digits, an annotator who takes items in the app's
queue order gets a better model at 100 labels than one who labels in random order.

Both go through the real code (`queue.next_items` or the random order, `annotation_submit`, then
`curation.worker.handle_request` as the training worker runs it after the commit), with the
simulation of `benchmarks/label_efficiency.py`, so this also keeps the benchmark working. Random
order is the queue's order at import (random priorities, seeded). Everything random is seeded.
The test compares real test accuracies and fails when the ranking is worse than chance (serving
the items the model is surest of scored 80% against 88%).
"""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits

from benchmarks.label_efficiency import digits_split, featurize_test_set, simulate

SEED = 0
LABELS = 100


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    settings.MEDIA_ROOT = tmp_path / "media"
    # The test is the training worker: no channel layer for the wake-up messages to pile up in.
    settings.CHANNEL_LAYERS = {}
    return tmp_path


# transactional_db, not db: handle_request closes the connection the way the worker does
# between requests (close_old_connections), which would end the transaction `db` wraps around
# each test.
def test_the_app_queue_beats_random_order_on_digits_at_100_labels(transactional_db):
    split = digits_split(SEED)
    X_test = featurize_test_set(split)

    # One BLAS thread, as the benchmark runs: several only slow these small fits down.
    with threadpool_limits(1):
        app = simulate(
            split, order="app", seed=SEED, labels=LABELS, X_test=X_test, evaluate_at=[LABELS]
        )
        random_order = simulate(
            split, order="random", seed=SEED, labels=LABELS, X_test=X_test, evaluate_at=[LABELS]
        )

    assert len(app.curve) == len(random_order.curve) == LABELS
    assert app.curve[-1] > random_order.curve[-1], (
        f"test accuracy at {LABELS} labels: app queue {app.curve[-1]:.3f}, "
        f"random order {random_order.curve[-1]:.3f}"
    )
