"""The model in the loop earns its keep: on digits, an annotator who takes items in the app's
queue order gets a better model at 100 labels than one who labels in random order.

Both go through the real code (`queue.next_items` or the random order, `annotation_submit`, then
`curation.worker.handle_request` as the training worker runs it after the commit), with the
simulation of `benchmarks/label_efficiency.py`, so this also keeps the benchmark working. Random
order is the queue's order at import (random priorities, seeded). Everything random is seeded.
The test compares real test accuracies and fails when the ranking is worse than chance (serving
the items the model is surest of scored 80% against 88%).

The learning-curve plot is drawn with matplotlib from the per-seed results the benchmark saves;
its tests use made-up curves, as drawing needs no simulation.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from benchmarks.label_efficiency import (
    ORDERS,
    Run,
    Summary,
    digits_split,
    featurize_test_set,
    learning_curves_svg,
    main,
    simulate,
    summaries_from_json,
    summaries_to_json,
)

SEED = 0
LABELS = 100
SVG = "{http://www.w3.org/2000/svg}"


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


def made_up_summaries(names: tuple[str, ...], *, seeds: int, labels: int) -> list[Summary]:
    """Rising noisy curves, the app's faster than random order's, from a seeded generator."""
    rng = np.random.default_rng(7)
    summaries = []
    for name in names:
        summary = Summary(name, pool=400, test=100, full=[0.9] * seeds, classes=3)
        for order, pace in zip(ORDERS, (10, 30), strict=True):
            for seed in range(seeds):
                n = np.arange(1, labels + 1)
                curve = 0.9 - 0.5 * np.exp(-n / pace) + 0.03 * rng.standard_normal(labels)
                train_ms = list(50 + 10 * rng.random(labels))
                summary.runs[order].append(
                    Run(name, order, seed, list(curve), train_ms, 5, {"fit": 12.5}, 3.0)
                )
        summaries.append(summary)
    return summaries


def groups(svg: str, prefix: str) -> list[ET.Element]:
    return [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("id", "").startswith(prefix)]


def test_the_plot_is_an_svg_with_one_panel_per_data_set_and_a_legend():
    summaries = made_up_summaries(("digits", "wine", "tweets"), seeds=3, labels=60)

    svg = learning_curves_svg(summaries, 60)

    assert len(groups(svg, "axes_")) == 3  # the fourth cell of the 2 × 2 grid stays empty
    assert len(groups(svg, "legend_")) == 1
    texts = {t.text for t in ET.fromstring(svg).iter(f"{SVG}text")}
    assert {"random order", "95% of full-data accuracy", "labels", "test accuracy"} <= texts
    assert "digits (400 items, 100 held out)" in texts


def test_the_plot_is_byte_identical_when_drawn_twice():
    summaries = made_up_summaries(("digits", "wine"), seeds=3, labels=60)

    assert learning_curves_svg(summaries, 60) == learning_curves_svg(summaries, 60)


def test_the_standard_error_band_needs_several_seeds():
    several = learning_curves_svg(made_up_summaries(("wine",), seeds=3, labels=40), 40)
    one = learning_curves_svg(made_up_summaries(("wine",), seeds=1, labels=40), 40)

    assert len(groups(several, "FillBetweenPolyCollection")) == len(ORDERS)
    assert groups(one, "FillBetweenPolyCollection") == []


def test_saved_results_round_trip_with_unscored_points():
    summaries = made_up_summaries(("digits", "wine"), seeds=2, labels=30)
    summaries[1].runs["app"][0].curve[4] = math.nan  # scored only at some label counts

    loaded, labels = summaries_from_json(summaries_to_json(summaries, 30))

    assert labels == 30
    assert [s.name for s in loaded] == ["digits", "wine"]
    assert math.isnan(loaded[1].runs["app"][0].curve[4])
    assert loaded[0].runs["random"][1].curve == summaries[0].runs["random"][1].curve
    assert loaded[0].full == summaries[0].full


def test_replot_redraws_the_plot_from_the_saved_results_alone(tmp_path):
    summaries = made_up_summaries(("digits", "breast_cancer"), seeds=2, labels=50)
    (tmp_path / "label_efficiency.json").write_text(summaries_to_json(summaries, 50))
    plot = tmp_path / "plot" / "label_efficiency.svg"

    main(["--replot", "--output", str(tmp_path / "label_efficiency.md"), "--plot", str(plot)])

    assert plot.read_text() == learning_curves_svg(summaries, 50)
    assert not (tmp_path / "label_efficiency.md").exists()  # the report is not rewritten
