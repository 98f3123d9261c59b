#!/usr/bin/env python
"""Label efficiency: how much sooner the app's model-in-the-loop queue gets a good model than
labelling in random order, with a simulated annotator going through the app's real code.

For each data set and seed, two annotators label the same pool of items, one label at a time:

- **app**: `queue.next_items(count=1)` leases the next item in queue order, the annotator
  answers with its ground-truth label through `annotation_submit`, then
  `curation.worker.handle_request(project_id)` runs, exactly what the training worker does for
  the label event once the answer commits (refit on all labels, re-rank the queue head with the
  project's defaults: margin sampling, 10% exploration, 5% evaluation slice).
- **random**: the annotator takes the items in the queue's order at import instead of asking
  the queue: items are imported with i.i.d. uniform random priorities, so that is a seeded
  uniform random permutation of the same pool the app draws from. Still through
  `annotation_submit` and `handle_request`: the same learner, trained the same way.
  (`ProjectTraining.strategy = "random"` would not be random order: the evaluation slice would
  still pick items.)

After every label the project's current model file is loaded (`curation.services.current_model`)
and scored on a held-out test split that never enters the project. Full-data accuracy is the
same learner class fitted on the whole pool. Reported: test accuracy at 20, 50, 100, 200 and 300
labels and the labels needed to first reach 90% and 95% of full-data accuracy, as means over
seeds (seed s: the s-th stratified split and the s-th random streams everywhere).

Data, all offline:

- `digits`: scikit-learn's 1,797 handwritten digits rendered to PNG as the demo does
  (`annotations.demo.render_digit`): image items, the app's image featurizer. 30% held out.
- `breast_cancer` (569 rows, 30 numbers) and `wine` (178 rows, 13 numbers): the app has text
  and image items only, and featurizers are registered per item kind, so each row becomes a text
  item of quantile-bin tokens, `f0_b3 f1_b9 …` (10 bins per column, edges from the pool only),
  learnt by the app's text hashing featurizer, unchanged. One-hot bins cost a linear model a
  few points against standardised numbers (full-data accuracy ~93% against ~97% on breast
  cancer); both orders pay it alike. 30% held out.
- `tweets`: the airline sentiment tweets of the demo (`annotations.demo.airline_tweets()`),
  3,000 for the pool and 1,000 for the test set, a stratified sample per seed.

Set-up: one scratch PostgreSQL database per process (`<prefix>_<i>`, created afresh and dropped
afterwards unless `--keep`; `--database-url sqlite` uses SQLite files instead) and DATA_DIR in a
temporary folder. PostgreSQL by default because the trainer writes the ranked queue head with one
`UPDATE … FROM unnest(…)` there, while on SQLite the ORM's `bulk_update` of 500 rows took ~100 ms
of every label. No channel layer: the script itself is the training worker, calling it right
after each commit. One BLAS thread per process (see `django_setup`). `--jobs` processes (one per
CPU by default) each take whole (data set, seed) units, so results do not depend on `--jobs`.

    python benchmarks/label_efficiency.py                       # everything: ~20 min, 2 cores
    python benchmarks/label_efficiency.py --datasets digits --seeds 2 --labels 150

Results: stdout, benchmarks/results/label_efficiency.md, every seed's curves beside it in
label_efficiency.json, and a learning-curve plot, docs/label_efficiency.svg (matplotlib, the
same library as the dashboard's plots). `--replot` redraws the plot from the JSON alone:

    python benchmarks/label_efficiency.py --replot
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import platform
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

if TYPE_CHECKING:
    from annotations.models import Project

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CHECKPOINTS = (20, 50, 100, 200, 300)
SHARES = (0.90, 0.95)
ORDERS = ("app", "random")
TEST_SHARE = 0.3
TWEETS_POOL = 3000
TWEETS_TEST = 1000
TABULAR_BINS = 10
#: Target 1: on digits the app reaches 95% of full-data accuracy with at most this share of the
#: labels random order needs.
DIGITS_LABEL_SHARE = 0.6
#: Target 2: from this many labels on, the app's mean accuracy is not below random order's.
NOT_WORSE_FROM = 100
#: Target 3 (a good start): at these label counts too, the app's mean accuracy is not below
#: random order's, on every data set.
EARLY = (20, 50)


@dataclass(frozen=True)
class Example:
    key: str  # stable id within the data set (file name of a digit image)
    content: str | bytes  # text, or PNG bytes for image items
    label: str


@dataclass(frozen=True)
class Split:
    """One seed's pool (the project's items) and held-out test set of a data set."""

    name: str
    kind: str  # Project.ItemKind: "text" or "image"
    classes: tuple[str, ...]
    pool: list[Example]
    test: list[Example]


@dataclass
class Run:
    """One simulated annotator: test accuracy after 1, 2, … labels."""

    dataset: str
    order: str
    seed: int
    curve: list[float] = field(default_factory=list)
    train_ms: list[float] = field(default_factory=list)  # handle_request, per label
    suggests_at: int | None = None  # labels when the page first shows the model's guesses
    steps_ms: dict[str, float] = field(default_factory=dict)  # trainer's steps, summed
    seconds: float = 0.0


# --------------------------------------------------------------------------- data sets


@lru_cache(maxsize=1)
def _digits() -> tuple[Any, tuple[bytes, ...]]:
    """scikit-learn's digits with each image rendered to PNG as the demo renders it."""
    from sklearn.datasets import load_digits

    from annotations.demo import render_digit

    data = load_digits()
    return data, tuple(render_digit(pixels) for pixels in data.images)


def _stratified(
    labels: Sequence[str], seed: int, test: float | int, train: int | None = None
) -> list[np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    return train_test_split(
        index, test_size=test, train_size=train, random_state=seed, stratify=list(labels)
    )


def digits_split(seed: int) -> Split:
    data, pngs = _digits()
    target = [str(int(t)) for t in data.target]
    pool, test = _stratified(target, seed, TEST_SHARE)
    examples = [Example(f"digit-{i:04d}", pngs[i], target[i]) for i in range(len(target))]
    return Split(
        "digits",
        "image",
        tuple(str(d) for d in range(10)),
        [examples[i] for i in pool],
        [examples[i] for i in test],
    )


def bin_tokens(rows: np.ndarray, edges: Sequence[np.ndarray]) -> list[str]:
    """Each row as one token per column naming its quantile bin: "f0_b3 f1_b9 …"."""
    bins = np.column_stack(
        [np.searchsorted(e, rows[:, j], side="right") for j, e in enumerate(edges)]
    )
    return [" ".join(f"f{j}_b{b}" for j, b in enumerate(row)) for row in bins]


def _tabular_split(name: str, loader: Callable[[], Any], seed: int) -> Split:
    data = loader()
    names = [str(n) for n in data.target_names]
    target = [names[t] for t in data.target]
    pool, test = _stratified(target, seed, TEST_SHARE)
    quantiles = np.linspace(0, 1, TABULAR_BINS + 1)[1:-1]
    edges = [
        np.unique(np.quantile(data.data[pool, j], quantiles)) for j in range(data.data.shape[1])
    ]
    texts = bin_tokens(data.data, edges)
    return Split(
        name,
        "text",
        tuple(names),
        [Example(f"row-{i}", texts[i], target[i]) for i in pool],
        [Example(f"row-{i}", texts[i], target[i]) for i in test],
    )


def breast_cancer_split(seed: int) -> Split:
    from sklearn.datasets import load_breast_cancer

    return _tabular_split("breast_cancer", load_breast_cancer, seed)


def wine_split(seed: int) -> Split:
    from sklearn.datasets import load_wine

    return _tabular_split("wine", load_wine, seed)


def tweets_split(seed: int) -> Split:
    from annotations.demo import TWEET_CLASSES, airline_tweets

    tweets = airline_tweets()
    labels = [t.label for t in tweets]
    pool, test = _stratified(labels, seed, TWEETS_TEST, TWEETS_POOL)
    return Split(
        "tweets",
        "text",
        tuple(name for name, _ in TWEET_CLASSES),
        [Example(tweets[i].external_id, tweets[i].text, tweets[i].label) for i in pool],
        [Example(tweets[i].external_id, tweets[i].text, tweets[i].label) for i in test],
    )


DATASETS: dict[str, Callable[[int], Split]] = {
    "digits": digits_split,
    "breast_cancer": breast_cancer_split,
    "wine": wine_split,
    "tweets": tweets_split,
}


# --------------------------------------------------------------------------- the simulation


def seed_everything(seed: int) -> None:
    """Item priorities (random.random), numpy's global stream and the trainer's choices."""
    from curation import trainer

    random.seed(seed)
    np.random.seed(seed)
    trainer.reseed(seed)


def create_project(split: Split, name: str) -> tuple[Project, dict[int, str]]:
    """A project holding `split.pool` as items, in the app's random initial queue order;
    returns (project, {item id: true label})."""
    from django.conf import settings

    from annotations.models import Item
    from annotations.services import add_items_counted, project_create
    from curation.features import store_image_features

    project = project_create(name=name, item_kind=split.kind, classes=split.classes)
    items = []
    for example in split.pool:
        item = Item(project=project, external_id=example.key)  # priority: random_priority()
        if split.kind == "image":
            # Every run of a data set shares one file per image: written once, read by the
            # trainer through the item's FileField like an imported image.
            relative = f"label-efficiency/{split.name}/{example.key}.png"
            path = Path(settings.MEDIA_ROOT) / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(example.content)
            item.image = relative
            item.image_format = "PNG"
        else:
            item.text = example.content
        items.append(item)
    items = Item.objects.bulk_create(items, batch_size=500)
    if split.kind == "image":
        # As the image import does: the featurizer's vectors are stored with the items.
        store_image_features(items, contents=[e.content for e in split.pool])
    add_items_counted(project, len(items))
    project.refresh_from_db()
    truth = {item.pk: example.label for item, example in zip(items, split.pool, strict=True)}
    return project, truth


def _annotator(username: str) -> Any:
    from django.contrib.auth import get_user_model

    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def featurize_test_set(split: Split) -> Any:
    """The test set through the featurizer the project's trainer uses."""
    from curation.featurizers import featurizer_for

    return featurizer_for(split.kind).transform([e.content for e in split.test])


def full_data_accuracy(split: Split, X_test: Any) -> float:
    """The app's learner class fitted on the whole pool, scored on the test set."""
    from curation.featurizers import featurizer_for
    from curation.learner import IncrementalLearner

    featurizer = featurizer_for(split.kind)
    learner = IncrementalLearner(list(split.classes), n_features=featurizer.n_features)
    learner.fit(
        featurizer.transform([e.content for e in split.pool]), [e.label for e in split.pool]
    )
    return accuracy(learner.predict(X_test), split.test)


def accuracy(predicted: Sequence[str], examples: Sequence[Example]) -> float:
    return sum(p == e.label for p, e in zip(predicted, examples, strict=True)) / len(examples)


def model_accuracy(project: Project, X_test: Any, split: Split) -> float:
    """Test accuracy of the project's current model, loaded from its file."""
    from curation.services import current_model

    learner = current_model(project)
    if learner is None:
        raise RuntimeError(f"project {project.pk} has no model after a label")
    return accuracy(learner.predict(X_test), split.test)


def simulate(
    split: Split,
    *,
    order: str,
    seed: int,
    labels: int,
    X_test: Any = None,
    evaluate_at: Sequence[int] | None = None,
) -> Run:
    """Label up to `labels` items of a fresh project in `order` ("app" or "random"), training
    after every label as the worker does; score the model after every label (or only after
    the label counts in `evaluate_at`; other points of the curve are NaN)."""
    from django.utils import timezone

    from annotations import queue
    from annotations.models import Item, ItemLease
    from annotations.services import annotation_submit
    from curation import trainer, worker

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    X_test = featurize_test_set(split) if X_test is None else X_test
    wanted = None if evaluate_at is None else set(evaluate_at)
    seed_everything(seed)
    name = f"label-efficiency {split.name} {order} seed {seed} {uuid.uuid4().hex[:8]}"
    project, truth = create_project(split, name)
    user = _annotator("label-efficiency-annotator")
    # Random order is the queue's order at import, never re-ranked: items get i.i.d. uniform
    # priorities, so it is a seeded uniform permutation of the same pool.
    initial = Item.objects.filter(project=project).order_by("-priority", "id")
    permutation = iter(list(initial.values_list("id", flat=True)))
    run = Run(split.name, order, seed)
    started = time.perf_counter()
    for n in range(1, labels + 1):
        if order == "app":
            leased = queue.next_items(project=project, user=user, count=1)
            item = leased[0] if leased else None
        else:
            pk = next(permutation, None)
            item = None if pk is None else Item.objects.select_related("project").get(pk=pk)
            if item is not None:  # handed out in the permutation's order instead of the queue's
                now = timezone.now()
                ItemLease.objects.create(
                    project=project,
                    item=item,
                    user=user,
                    created_at=now,
                    expires_at=queue.lease_expiry(now),
                )
        if item is None:  # the pool is exhausted
            break
        annotation_submit(
            item=item,
            annotator=user,
            labels=[truth[item.pk]],
            client_uuid=uuid.uuid4(),
        )
        clock = time.perf_counter()
        result = worker.handle_request(project.pk)  # what the worker runs after the commit
        run.train_ms.append((time.perf_counter() - clock) * 1000)
        if result is None:  # handle_request logs and swallows errors; a label always trains
            raise RuntimeError(f"training after label {n} of {split.name} did nothing")
        # The cross-validated estimate runs after the announcement, outside the timed steps.
        steps = {**result.timings_ms, "cv": (result.version.metrics or {}).get("cv_ms", 0.0)}
        for step, ms in steps.items():
            run.steps_ms[step] = run.steps_ms.get(step, 0.0) + ms
        if run.suggests_at is None and not (result.version.metrics or {}).get("cold", True):
            run.suggests_at = n  # `curation.suggest` shows guesses from this version on
        if wanted is None or n in wanted:
            run.curve.append(model_accuracy(project, X_test, split))
        else:
            run.curve.append(math.nan)
    run.seconds = time.perf_counter() - started
    trainer.forget_states()  # the worker's cached state of a finished project: memory only
    return run


# --------------------------------------------------------------------------- summaries


@dataclass
class Summary:
    """All seeds of one data set."""

    name: str
    pool: int
    test: int
    full: list[float] = field(default_factory=list)  # full-data accuracy per seed
    runs: dict[str, list[Run]] = field(default_factory=lambda: {o: [] for o in ORDERS})
    classes: int = 0

    def at(self, order: str, n: int) -> list[float]:
        """Accuracy after `n` labels, per seed (empty if the pool has fewer items)."""
        return [r.curve[n - 1] for r in self.runs[order] if len(r.curve) >= n]

    def labels_to_reach(self, order: str, share: float) -> list[int | None]:
        """Per seed: the first label count whose accuracy is at least `share` × full-data."""
        out = []
        for run, full in zip(self.runs[order], self.full, strict=True):
            hit = next((n for n, a in enumerate(run.curve, 1) if a >= share * full), None)
            out.append(hit)
        return out

    def mean_curve(self, order: str) -> list[float]:
        length = min(len(r.curve) for r in self.runs[order])
        return [statistics.fmean(r.curve[n] for r in self.runs[order]) for n in range(length)]

    def se_curve(self, order: str) -> list[float]:
        """Standard error of `mean_curve` over seeds (zero with a single seed)."""
        runs = self.runs[order]
        length = min(len(r.curve) for r in runs)
        if len(runs) < 2:
            return [0.0] * length
        root = math.sqrt(len(runs))
        return [statistics.stdev(r.curve[n] for r in runs) / root for n in range(length)]


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def _reach(hits: Sequence[int | None]) -> tuple[float | None, str]:
    """(mean labels if every seed got there, the table cell)."""
    reached = [h for h in hits if h is not None]
    if len(reached) < len(hits):
        return None, f"not reached ({len(reached)}/{len(hits)} seeds)"
    mean = statistics.fmean(reached)
    return mean, f"{mean:.0f}"


def accuracy_table(summaries: Sequence[Summary], checkpoints: Sequence[int]) -> str:
    head = " | ".join(f"{n} labels" for n in checkpoints)
    out = f"| data set | order | {head} | full data |\n|---|---|{'---:|' * len(checkpoints)}---:|\n"
    for s in summaries:
        for order in ORDERS:
            cells = " | ".join(_mean_sd(s.at(order, n)) for n in checkpoints)
            out += f"| {s.name} | {order} | {cells} | {_mean_sd(s.full)} |\n"
    return out


def reach_table(summaries: Sequence[Summary]) -> str:
    out = "| data set | share of full-data accuracy | app | random | app / random |\n"
    out += "|---|---:|---:|---:|---:|\n"
    for s in summaries:
        for share in SHARES:
            app, app_cell = _reach(s.labels_to_reach("app", share))
            rnd, rnd_cell = _reach(s.labels_to_reach("random", share))
            ratio = f"{app / rnd:.2f}" if app is not None and rnd is not None else "—"
            out += f"| {s.name} | {share:.0%} | {app_cell} | {rnd_cell} | {ratio} |\n"
    return out


def _gaps(s: Summary, counts: Sequence[int]) -> list[tuple[int, float, float]]:
    """(labels, mean app − random accuracy, its standard error over seeds) per label count."""
    gaps = []
    for n in counts:
        app, rnd = s.at("app", n), s.at("random", n)
        if not app or not rnd:
            continue
        gap = statistics.fmean(app) - statistics.fmean(rnd)
        diffs = [a - b for a, b in zip(app, rnd, strict=True)]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        gaps.append((n, gap, se))
    return gaps


def _gap_text(gaps: Sequence[tuple[int, float, float]]) -> str:
    return ", ".join(f"{n}: {100 * gap:+.1f} pp (SE {100 * se:.1f})" for n, gap, se in gaps)


def suggestions_table(summaries: Sequence[Summary]) -> str:
    """When the annotate page starts showing the model's guesses: once every class has a label
    (`curation.status`), which depends on the order the items come in."""
    out = "| data set | classes | app | random |\n|---|---:|---:|---:|\n"
    for s in summaries:
        cells = []
        for order in ORDERS:
            hits = [r.suggests_at for r in s.runs[order]]
            cells.append(_reach(hits)[1])
        out += f"| {s.name} | {s.classes} | {' | '.join(cells)} |\n"
    return out


def targets(summaries: Sequence[Summary], checkpoints: Sequence[int], labels: int) -> list[str]:
    """The pass/fail lines."""
    lines = []
    by_name = {s.name: s for s in summaries}
    if "digits" in by_name:
        s = by_name["digits"]
        app, _ = _reach(s.labels_to_reach("app", 0.95))
        rnd, _ = _reach(s.labels_to_reach("random", 0.95))
        # Random order not getting there within the run: it needs more than `labels`.
        bound = rnd if rnd is not None else labels
        ok = app is not None and app <= DIGITS_LABEL_SHARE * bound
        app_text = "not reached" if app is None else f"{app:.0f}"
        rnd_text = f"{rnd:.0f}" if rnd is not None else f"> {labels}"
        ratio = f" ({app / bound:.0%})" if app is not None else ""
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: digits reaches 95% of full-data accuracy with at most "
            f"{DIGITS_LABEL_SHARE:.0%} of the labels random order needs: {app_text} against "
            f"{rnd_text}{ratio}"
        )
    for s in summaries:
        early = _gaps(s, [n for n in EARLY if n in checkpoints])
        if early:
            ok = all(gap >= 0 for _, gap, _ in early)
            lines.append(
                f"{'PASS' if ok else 'FAIL'}: {s.name}: the app's mean accuracy is not below "
                f"random order's at {' and '.join(map(str, EARLY))} labels (app − random: "
                f"{_gap_text(early)})"
            )
    for s in summaries:
        gaps = _gaps(s, [n for n in checkpoints if n >= NOT_WORSE_FROM])
        if not gaps:
            continue
        ok = all(gap >= 0 for _, gap, _ in gaps)
        lines.append(
            f"{'PASS' if ok else 'FAIL'}: {s.name}: the app's mean accuracy is not below random "
            f"order's at {NOT_WORSE_FROM}+ labels (app − random: {_gap_text(gaps)})"
        )
    return lines


def cost_table(summaries: Sequence[Summary]) -> str:
    steps = ("fit", "rank", "cv", "save")
    out = (
        "| data set | pool | test | per label p50 | p95 | "
        + " | ".join(f"{step} (mean)" for step in steps)
        + " | one run |\n|---|---:|---:|---:|---:|"
        + "---:|" * len(steps)
        + "---:|\n"
    )
    for s in summaries:
        runs = [r for order in ORDERS for r in s.runs[order]]
        ms = sorted(t for r in runs for t in r.train_ms)
        p50, p95 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        n = len(ms)
        means = " | ".join(
            f"{sum(r.steps_ms.get(step, 0.0) for r in runs) / n:.0f} ms" for step in steps
        )
        per_run = statistics.fmean(r.seconds for r in runs)
        out += (
            f"| {s.name} | {s.pool:,} | {s.test:,} | {p50:.0f} ms | {p95:.0f} ms | {means} "
            f"| {per_run:.0f} s |\n"
        )
    return out


# --------------------------------------------------------------------------- stored results

#: Version of label_efficiency.json; bump when its layout changes.
RESULTS_FORMAT = 1


def _finite(values: Sequence[float], digits: int | None = None) -> list[float | None]:
    """JSON has no NaN (points of a curve that were not scored): None instead."""
    return [None if math.isnan(v) else (v if digits is None else round(v, digits)) for v in values]


def summaries_to_json(summaries: Sequence[Summary], labels: int) -> str:
    """Every seed's runs and full-data accuracy, enough to redraw the plot (`--replot`) or
    recompute any table without simulating again."""
    datasets = []
    for s in summaries:
        runs = {
            order: [
                {
                    **asdict(r),
                    "curve": _finite(r.curve),
                    "train_ms": _finite(r.train_ms, 1),
                    "steps_ms": {k: round(v, 1) for k, v in r.steps_ms.items()},
                    "seconds": round(r.seconds, 2),
                }
                for r in s.runs[order]
            ]
            for order in ORDERS
        }
        datasets.append(
            {"name": s.name, "pool": s.pool, "test": s.test, "classes": s.classes}
            | {"full": s.full, "runs": runs}
        )
    payload = {"format": RESULTS_FORMAT, "labels": labels, "datasets": datasets}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n"


def summaries_from_json(text: str) -> tuple[list[Summary], int]:
    """(summaries, labels per simulated annotator) from `summaries_to_json`."""
    payload = json.loads(text)
    if payload.get("format") != RESULTS_FORMAT:
        raise ValueError(f"results format {payload.get('format')!r}, expected {RESULTS_FORMAT}")
    summaries = []
    for d in payload["datasets"]:
        summary = Summary(d["name"], d["pool"], d["test"], list(d["full"]), classes=d["classes"])
        for order in ORDERS:
            for r in d["runs"][order]:
                nan = {
                    key: [math.nan if v is None else v for v in r[key]]
                    for key in ("curve", "train_ms")
                }
                summary.runs[order].append(Run(**(r | nan)))
        summaries.append(summary)
    return summaries, payload["labels"]


# --------------------------------------------------------------------------- the plot

_COLOURS = {"app": "#4f7cff", "random": "#e8590c", "full": "#868e96"}
_ORDER_NAMES = {"app": "app queue (margin, defaults)", "random": "random order"}
#: Fixed salt for the ids matplotlib derives from it (clip paths…), so the SVG is identical
#: from run to run and diffs only when the numbers change.
_SVG_STYLE = {"svg.hashsalt": "label-efficiency", "svg.fonttype": "none", "font.size": 9}


def learning_curves_svg(summaries: Sequence[Summary], labels: int) -> str:
    """Mean test accuracy against labels, one panel per data set, the standard error over seeds
    as a band, drawn with matplotlib. Same summaries, same bytes: a fixed hash salt, no date,
    and text kept as text (no embedded glyphs, which also keeps the file small)."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(2, len(summaries))
    rows = math.ceil(len(summaries) / columns)
    seeds = max(len(s.runs[order]) for s in summaries for order in ORDERS)
    # The default style, not the user's matplotlibrc: the file must not depend on who ran it.
    with matplotlib.style.context(["default", _SVG_STYLE]):
        # One panel still needs the width of the legend and the title.
        width = 4.2 * columns if columns > 1 else 5.6
        figure = Figure(figsize=(width, 3.0 * rows + 0.9), layout="constrained")
        FigureCanvasAgg(figure)  # no pyplot: no global figure state, no GUI backend
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for spare in axes[len(summaries) :]:
            spare.remove()
        for ax, summary in zip(axes, summaries, strict=False):
            _learning_curves_panel(ax, summary, labels)
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=2 * columns, frameon=False)
        band = "; bands: ± 1 standard error" if seeds > 1 else ""
        figure.suptitle(
            "Label efficiency: the app's queue against random order\n"
            f"mean test accuracy over {seeds} seed{'s' if seeds > 1 else ''}{band}",
            fontsize=10,
        )
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    return out.getvalue()


def _learning_curves_panel(ax: Any, s: Summary, labels: int) -> None:
    from matplotlib.ticker import MaxNLocator

    full = statistics.fmean(s.full) if s.full else None
    tail = []
    x_max = 1
    for order in ORDERS:
        if not s.runs[order]:
            continue
        mean = np.array(s.mean_curve(order)[:labels])
        se = np.array(s.se_curve(order)[:labels])
        x = np.arange(1, len(mean) + 1)
        x_max = max(x_max, len(mean))
        tail.extend(mean[9:][~np.isnan(mean[9:])])
        ax.plot(x, mean, color=_COLOURS[order], linewidth=1.6, label=_ORDER_NAMES[order])
        if len(s.runs[order]) > 1:
            ax.fill_between(x, mean - se, mean + se, color=_COLOURS[order], alpha=0.2, lw=0)
    if full is not None:
        ax.axhline(full, color=_COLOURS["full"], linestyle=":", lw=1, label="full-data accuracy")
        ax.axhline(
            0.95 * full,
            color=_COLOURS["full"],
            linestyle="--",
            lw=1,
            label="95% of full-data accuracy",
        )
    # The first ten labels' guesses would squash the interesting part: the axis starts a little
    # below the lowest mean after them (or below 90% of full-data accuracy).
    floor = min([*tail, 0.9 * full if full is not None else 1.0])
    ax.set(
        title=f"{s.name} ({s.pool:,} items, {s.test:,} held out)",
        xlabel="labels",
        ylabel="test accuracy",
        xlim=(0, x_max),
        ylim=(math.floor(10 * floor) / 10, 1.005),
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(color="#e9ecef", linewidth=0.6)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma list of data sets")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0 … n-1")
    p.add_argument("--labels", type=int, default=300, help="labels per simulated annotator")
    p.add_argument("--output", default=str(RESULTS / "label_efficiency.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "label_efficiency.svg"))
    p.add_argument(
        "--replot",
        action="store_true",
        help="only redraw --plot from the per-seed results of the last run, the .json beside "
        "--output; simulates nothing",
    )
    p.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/dataprep_label_efficiency",
        help="PostgreSQL server and name prefix of the scratch databases, or 'sqlite'",
    )
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: one per CPU)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch database and files")
    args = p.parse_args(argv)
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for name in args.dataset_list:
        if name not in DATASETS:
            p.error(f"--datasets: unknown data set {name!r} (choose from {', '.join(DATASETS)})")
    if args.seeds < 1 or args.labels < 1 or args.jobs < 1:
        p.error("--seeds, --labels and --jobs must be at least 1")
    return args


def django_setup(scratch: Path, database_url: str) -> None:
    """Settings for a scratch database and DATA_DIR, before Django reads them."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="dataprep_site.settings",
        DATABASE_URL=database_url,
        DATA_DIR=str(scratch),
        MEDIA_ROOT=str(scratch / "media"),
        SECRET_KEY=secrets.token_urlsafe(48),
        DEBUG="0",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    # One BLAS thread per process, as a training worker should run. OpenBLAS's default (a thread
    # per core) made each refit of these small models ~10x slower on a busy 2-core machine:
    # the threads spin waiting for each other. threadpoolctl limits the libraries loaded so far,
    # hence the imports first.
    import scipy.optimize  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    # No channel layer: this script is the training worker and calls it after every commit,
    # so the wake-up messages would only pile up in an in-memory channel nobody reads.
    settings.CHANNEL_LAYERS = {}
    call_command("migrate", verbosity=0, interactive=False)


@dataclass
class Unit:
    """One data set and seed: its full-data accuracy and both simulated annotators."""

    name: str
    seed: int
    pool: int
    test: int
    full: float
    runs: list[Run]
    classes: int = 0


def run_unit(name: str, seed: int, labels: int) -> Unit:
    split = DATASETS[name](seed)
    X_test = featurize_test_set(split)
    full = full_data_accuracy(split, X_test)
    runs = []
    for order in ORDERS:
        run = simulate(split, order=order, seed=seed, labels=labels, X_test=X_test)
        runs.append(run)
        print(
            f"  {name} seed {seed} {order:>6}: {len(run.curve)} labels in {run.seconds:.0f} s, "
            f"accuracy {100 * run.curve[-1]:.1f}% (full data {100 * full:.1f}%)",
            flush=True,
        )
    return Unit(name, seed, len(split.pool), len(split.test), full, runs, len(split.classes))


def scratch_databases(url: str, count: int, scratch: Path) -> list[str]:
    """`count` empty databases, one per process: with one shared database, one process's
    sweep for stale projects (`worker.handle_request` runs it every 30 s) would train another
    process's project between its label and its training. PostgreSQL: `<name>_<i>` on the
    server of `url`, dropped and created afresh; "sqlite": files in the scratch folder."""
    if url == "sqlite":
        return [f"sqlite:///{scratch / f'job-{i}.sqlite3'}" for i in range(count)]
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    base = parts.path.lstrip("/")
    if not base or parts.scheme not in {"postgres", "postgresql"}:
        raise SystemExit(f"--database-url {url!r}: a postgres:// URL with a name, or 'sqlite'")
    names = [f"{base}_{i}" for i in range(count)]
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return [urlunsplit(parts._replace(path=f"/{name}")) for name in names]


def drop_databases(urls: Sequence[str]) -> None:
    import psycopg
    from psycopg import sql

    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in {"postgres", "postgresql"}:
            continue
        admin = urlunsplit(parts._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            name = sql.Identifier(parts.path.lstrip("/"))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(name))


def _start_process(scratch_root: Path, databases: Any) -> None:
    """A worker process of `--jobs`: its own scratch database and folder."""
    folder = Path(tempfile.mkdtemp(prefix="job-", dir=scratch_root))
    django_setup(folder, databases.get())


def run_all(args: argparse.Namespace, scratch: Path, databases: list[str]) -> list[Summary]:
    """Every (data set, seed), in `args.jobs` processes; summaries in `--datasets` order."""
    # Costliest first, so the processes finish together.
    cost = {"tweets": 0, "digits": 1, "breast_cancer": 2, "wine": 3}
    work = sorted(
        ((name, seed) for name in args.dataset_list for seed in range(args.seeds)),
        key=lambda unit: (cost.get(unit[0], 9), unit[1]),
    )
    if args.jobs == 1:
        from django.db import connections

        django_setup(scratch, databases[0])
        try:
            units = [run_unit(name, seed, args.labels) for name, seed in work]
        finally:
            connections.close_all()
    else:
        context = multiprocessing.get_context("spawn")  # a fresh Django per process
        queue = context.Queue()
        for url in databases:
            queue.put(url)
        with ProcessPoolExecutor(
            args.jobs, mp_context=context, initializer=_start_process, initargs=(scratch, queue)
        ) as pool:
            futures = [pool.submit(run_unit, name, seed, args.labels) for name, seed in work]
            units = [f.result() for f in futures]
    summaries = []
    for name in args.dataset_list:
        mine = sorted((u for u in units if u.name == name), key=lambda u: u.seed)
        summary = Summary(name, mine[0].pool, mine[0].test, classes=mine[0].classes)
        for unit in mine:
            summary.full.append(unit.full)
            for run in unit.runs:
                summary.runs[run.order].append(run)
        summaries.append(summary)
    return summaries


def machine_info(args: argparse.Namespace, seconds: float) -> str:
    import django
    import sklearn

    return (
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"Django {django.__version__}, scikit-learn {sklearn.__version__}, numpy "
        f"{np.__version__}\n"
        f"- `--datasets {args.datasets} --seeds {args.seeds} --labels {args.labels}`: "
        f"{seconds / 60:.1f} min in all, {args.jobs} processes, "
        f"{'SQLite' if args.database_url == 'sqlite' else 'PostgreSQL'}\n"
    )


def report(summaries: list[Summary], args: argparse.Namespace, seconds: float) -> str:
    checkpoints = [n for n in CHECKPOINTS if n <= args.labels]
    lines = targets(summaries, checkpoints, args.labels)
    return (
        "# Label efficiency: the app's queue against random order\n\n"
        "Written by `benchmarks/label_efficiency.py` (see its docstring for the method).\n\n"
        + machine_info(args, seconds)
        + f"\n## Test accuracy (%), mean ± sd over {args.seeds} seeds\n\n"
        + accuracy_table(summaries, checkpoints)
        + "\n— : the pool has fewer items than that.\n"
        + "\n## Labels needed to first reach a share of full-data accuracy (mean over seeds)\n\n"
        + reach_table(summaries)
        + "\n## Labels before the page shows the model's guesses (mean over seeds)\n\n"
        + "Suggestions start once every class has a label (`curation.status`).\n\n"
        + suggestions_table(summaries)
        + "\n## Targets\n\n"
        + "".join(f"- {line}\n" for line in lines)
        + "\n## Cost\n\n"
        + "`handle_request` after each label, both orders, and the trainer's own step timings "
        "averaged per label: fit (refit on all labels), rank (score the pool sample, write the "
        "queue head), cv (the cross-validated accuracy shown in the app, recomputed when the "
        "labels grew by 20%), save (model file and version row). A run is one simulated "
        "annotator, including scoring the test set after every label.\n\n" + cost_table(summaries)
    )


def write_plot(summaries: Sequence[Summary], labels: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(learning_curves_svg(summaries, labels))


def replot(args: argparse.Namespace) -> int:
    source = Path(args.output).with_suffix(".json")
    if not source.exists():
        raise SystemExit(f"--replot: no {source}; a run of the benchmark writes it")
    summaries, labels = summaries_from_json(source.read_text())
    write_plot(summaries, labels, Path(args.plot))
    print(f"wrote {args.plot} from {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="label-efficiency-"))
    databases = scratch_databases(args.database_url, args.jobs, scratch)
    try:
        summaries = run_all(args, scratch, databases)
    finally:
        if args.keep:
            print(f"scratch databases {', '.join(databases)} and files in {scratch} kept")
        else:
            drop_databases(databases)
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    text = report(summaries, args, seconds)
    print("\n" + text)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    stored = output.with_suffix(".json")
    stored.write_text(summaries_to_json(summaries, args.labels))
    plot = Path(args.plot)
    write_plot(summaries, args.labels, plot)
    print(f"wrote {output}, {stored} and {plot} ({seconds / 60:.1f} min in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
