"""The model in the loop: what the training worker does when a label commits.

`train(project_id)` brings a project's model and queue ranking up to date with the labels in the
database, under a row lock on the project's `ProjectTraining` so one project trains in one place
at a time. It always reads the labels from the database — the channel event only says "look" —
so a lost event, a restart or a second worker never loses a label: the next run catches up.

Each worker process keeps a `ProjectState` per project, so a run costs what changed, not the
project's size:

- the labelled rows (features plus majority label), caught up with one indexed query on
  `gold_changed_idx` for the gold labels changed since the state's watermark;
- a *pool sample*: feature rows of up to `POOL_SAMPLE` open items drawn uniformly at random
  (walking the queue index below a random priority: the unscored items' priorities are i.i.d.
  uniform, so this is a uniform sample in one index range scan). Scoring a fixed-size sample
  after every label keeps the cost flat from 10k to 1M items (random subsampling of the pool is
  the standard way to scale uncertainty sampling). Answered items leave the sample and a slice is
  replaced by fresh random items after each run, so over time the whole pool is visited.

After every label the learner is refit on all labels (warm-started), the sample is scored with the
project's strategy, and the top `RANKED` items — with the exploration share and the evaluation
slice woven in — get priorities `1 + rank score`, above every unranked item (priorities in
[0, 1)). The next-item query still walks one index. Items ranked before but not any more go back
to a fresh random priority. Then a new model version is saved (atomic file + row) and the
project's websocket group hears "model.updated".
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from annotations.events import project_group, publish
from annotations.gold import reviews_for_model_disagreement
from annotations.models import PINNED_PRIORITY, GoldLabel, Item, Project
from curation import artifacts, cold_start, evaluation, ranking_write, versions
from curation.evaluation import eval_summary
from curation.features import item_features
from curation.featurizers import Featurizer, featurizer_for
from curation.learner import IncrementalLearner
from curation.models import BATCH_DIVERSE, EvalSample, ModelVersion, ProjectTraining, models_dir
from curation.status import announcement, class_needs, model_status
from curation.strategies import batch_diverse, get_strategy, margin, select

logger = logging.getLogger(__name__)

__all__ = [
    "POOL_SAMPLE",
    "reseed",
    "RANKED",
    "TrainingResult",
    "forget_states",
    "eval_summary",
    "model_status",
    "learner_snapshot",
    "train",
]

#: Open items whose features a worker keeps and scores after every label.
POOL_SAMPLE = 20_000
#: Items added to a growing sample per run, and replaced in a full one, after the announcement.
SAMPLE_GROW = 1_000
SAMPLE_ROTATE = 100
#: Runs between two checks that every sampled item is still open (items answered through the
#: trainer's own catch-up leave the sample at once; this catches deletions and the like).
SAMPLE_CHECK_RUNS = 20
#: Items written at the head of the queue after every label, in rank order.
RANKED = 500
#: Items picked greedily for diversity at the head of the queue by the batch-diverse strategy.
DIVERSE_HEAD = 50
#: Typical items (`_typical_head`) served while the model cannot rank or has not seen every
#: class, and the random candidates of the pool sample they are chosen among.
COLD_HEAD = 50
COLD_CANDIDATES = 2_000
#: Typical items are woven into the ranking while a class is unseen, up to this many labels:
#: past it a class is rare, the clustering's ~0.1 s a run is no longer worth it, and the
#: exploration share keeps looking.
COLD_MIX_LABELS = 300

#: How far back each catch-up re-reads answers, for transactions that committed out of order.
COMMIT_SKEW_SECONDS = 5

Label = str | list[str]


@dataclass
class TrainingResult:
    """What one run did; `announced` is the message sent to the project's websocket group."""

    version: ModelVersion
    ranked: int
    announced: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class SampleBlock:
    """Some items of the pool sample with their feature rows. Blocks let the sample rotate and
    lose answered items without copying the whole matrix."""

    ids: list[int]
    X: Any


@dataclass
class ProjectState:
    """A worker's in-memory view of one project; rebuilt from the database whenever in doubt."""

    project_id: int
    schema: tuple
    featurizer: Featurizer
    learner: IncrementalLearner
    labels: dict[int, Label] = field(default_factory=dict)
    rows: dict[int, Any] = field(default_factory=dict)  # item id → feature row (1 × d)
    answers: dict[int, int] = field(default_factory=dict)  # item id → non-skipped answers
    watermark: datetime | None = None  # latest GoldLabel.updated_at consumed
    blocks: list[SampleBlock] = field(default_factory=list)  # the pool sample, oldest first
    runs: int = 0
    pending_eval: list[int] = field(default_factory=list)  # open evaluation items
    version: int | None = None  # the model version the learner was saved as
    scores: ranking_write.Scores | None = None  # the sample's probabilities this run, if ranked
    lock: threading.Lock = field(default_factory=threading.Lock)


_states: dict[int, ProjectState] = {}
_rng = np.random.default_rng()


def reseed(seed: int | None) -> None:
    """Make the trainer's random choices (exploration, samples) repeatable: tests, benchmarks."""
    global _rng
    _rng = np.random.default_rng(seed)


_states_lock = threading.Lock()


def forget_states() -> None:
    """Drop every cached project state (tests; a worker after a schema change rebuilds anyway)."""
    with _states_lock:
        _states.clear()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def train(project_id: int, *, announce: bool = True, cache: bool = True) -> TrainingResult | None:
    """Bring `project_id`'s model and ranking up to date; None when there was nothing to do.

    Nothing to do: the project is gone, has no label yet, or its labels are unchanged since the
    current model (whoever trained it). A second trainer of the same project waits on the row
    lock, then sees the first one's model and returns None, so racing workers make one version.
    """
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    ProjectTraining.objects.get_or_create(project=project)
    state = _state_for(project) if cache else _new_state(project)
    with state.lock:
        result = _train_locked(project, state)
        if result is None:
            return None
        if announce:
            publish(project_group(project_id), result.announced)
        _after_announcement(project, state, result)
    return result


def _after_announcement(project: Project, state: ProjectState, result: TrainingResult) -> None:
    """Work the annotators need not wait for: predictions for the evaluation items just placed
    (before any of their labels can be processed: this worker handles the next request only
    after this) and the pool sample's growth or rotation. The accuracy estimate and the
    weighted consensus are the worker's follow-up jobs (`curation.jobs`)."""
    started = time.perf_counter()
    evaluation.eval_predict(
        project=project,
        learner=state.learner,
        featurizer=state.featurizer,
        ids=state.pending_eval,
        version=result.version.version,
    )
    _grow_sample(project, state, check=state.runs % SAMPLE_CHECK_RUNS == 0)
    result.timings_ms["after"] = round((time.perf_counter() - started) * 1000, 2)


def learner_snapshot(project: Project, version: int) -> IncrementalLearner | None:
    """A learner trained on the labels of model `version` (or newer), for follow-up work such
    as the accuracy estimate: a copy of this worker's own when it trained that version, else
    rebuilt from the labels in the database (another worker trained it, or this one restarted).
    None when the project has no label."""
    with _states_lock:
        state = _states.get(project.pk)
    if state is not None and state.schema == _schema(project):
        with state.lock:
            if state.version == version:
                # A shallow copy: fit() replaces the learner's row matrices, never changes them.
                return copy.copy(state.learner)
    state = _new_state(project)
    count, last_change = _fingerprint(project)
    if count == 0:
        return None
    _catch_up(project, state, count, last_change)
    state.learner.fit(*_training_set(state))
    return state.learner


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def _schema(project: Project) -> tuple:
    classes = tuple(project.class_names())
    return (classes, project.is_multi_label, project.item_kind)


def _new_state(project: Project) -> ProjectState:
    schema = _schema(project)
    featurizer = featurizer_for(project.item_kind)
    learner = IncrementalLearner(
        list(schema[0]), multi_label=project.is_multi_label, n_features=featurizer.n_features
    )
    return ProjectState(project.pk, schema, featurizer, learner)


def _state_for(project: Project) -> ProjectState:
    with _states_lock:
        state = _states.get(project.pk)
        if state is None or state.schema != _schema(project):
            state = _states[project.pk] = _new_state(project)
        return state


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _train_locked(project: Project, state: ProjectState) -> TrainingResult | None:
    clock = _Clock()
    with transaction.atomic():
        training = (
            ProjectTraining.objects.select_for_update(of=("self",))
            .select_related("current_version")
            .get(project=project)
        )
        if _schema(project) != state.schema:
            # The classes changed while this run waited for the lock (`annotations.label_classes`):
            # the run that change requested retrains from scratch with the new names.
            return None
        count, last_change = _fingerprint(project)
        if count == 0:
            # Only skips so far: nothing to learn, but nothing stale either.
            if last_change != training.labels_until:
                training.labels_until = last_change
                training.save(update_fields=["labels_until"])
            return None
        if training.current_version_id is not None and (
            count == training.labels_seen and last_change == training.labels_until
        ):
            return None
        clock.lap("lock")
        changed = _catch_up(project, state, count, last_change)
        _drop_from_sample(state, changed)
        clock.lap("catch_up")
        evaluation.eval_resolve(project=project, changed=changed, labels=state.labels)
        disputed = _disputes(project, state, changed)
        X, y = _training_set(state)
        state.learner.fit(X, y)
        clock.lap("fit")
        reviews_for_model_disagreement(project, disputed)
        ranked, evals = _rank(project, training, state)
        state.pending_eval = evals
        clock.lap("rank")
        version = _save_version(project, training, state, (count, last_change, len(ranked)), clock)
        clock.lap("save")
        # Last, so the head's rows are locked (and skipped by next_items) only until the commit.
        _write_ranking(project, ranked, state, version.version)
        clock.lap("write")
    state.runs += 1
    state.version = version.version
    announced = announcement(project, training, version) | {"since": 0, "ranked": len(ranked)}
    return TrainingResult(version, len(ranked), announced, clock.laps)


def _fingerprint(project: Project) -> tuple[int, datetime | None]:
    """(items with a gold label, latest change of any gold row): a count alone would miss an
    edit. Gold rows change with every answer and every review decision (`annotations.gold`)."""
    labelled = GoldLabel.objects.filter(project=project, labels__isnull=False).count()
    last = GoldLabel.objects.filter(project=project).aggregate(m=Max("updated_at"))["m"]
    return labelled, last


def _catch_up(
    project: Project, state: ProjectState, count: int, last_change: datetime | None
) -> set[int]:
    """Apply the answers changed since the state's watermark; return the items relabelled.

    Only the changed items' answers are re-read. If the state and the database then disagree on
    the number of answers (an answer was deleted, or this is a fresh state), it rebuilds from
    all answers: the database is the source of truth.
    """
    changed: set[int] = set()
    if state.watermark is not None:
        # Answers commit out of order: one stamped before the watermark may have committed after
        # the last run read. Re-reading a few seconds back catches it (relabelling is idempotent).
        since = state.watermark - timedelta(seconds=COMMIT_SKEW_SECONDS)
        recent = GoldLabel.objects.filter(project=project, updated_at__gte=since)
        changed = set(recent.values_list("item_id", flat=True))
        _relabel(project, state, changed)
    if state.watermark is None or sum(state.answers.values()) != count:
        state.labels.clear()
        state.answers.clear()
        changed = set(
            GoldLabel.objects.filter(project=project, labels__isnull=False).values_list(
                "item_id", flat=True
            )
        )
        _relabel(project, state, changed)
    state.watermark = last_change  # read under the lock, moments ago
    missing = [i for i in state.labels if i not in state.rows]
    if missing:
        X, kept = item_features(project, state.featurizer, missing)
        for row, item_id in enumerate(kept):
            state.rows[item_id] = X[row : row + 1]
        for item_id in set(missing) - set(kept):  # unreadable image: cannot train on it
            state.labels.pop(item_id, None)
    return changed


def _relabel(project: Project, state: ProjectState, item_ids: set[int]) -> None:
    """Take the gold label of `item_ids` (`annotations.gold`: adjudicated, else unanimous, else
    majority or weighted consensus). Each item counts once, however many answered it; items
    without a gold label (a tie, or no answer left) leave training. Names no longer in the schema
    are ignored."""
    if not item_ids:
        return
    classes = state.schema[0]
    rank = {name: i for i, name in enumerate(classes)}
    ids = list(item_ids)
    gold: dict[int, list[str] | None] = {}
    for start in range(0, len(ids), 5000):
        gold.update(
            GoldLabel.objects.filter(
                project=project, item_id__in=ids[start : start + 5000]
            ).values_list("item_id", "labels")
        )
    for item_id in ids:
        state.answers.pop(item_id, None)
        state.labels.pop(item_id, None)
        names = gold.get(item_id)
        if names is None:
            continue
        state.answers[item_id] = 1
        names = [n for n in names if n in rank]
        if project.is_multi_label:
            state.labels[item_id] = names
        elif names:
            state.labels[item_id] = names[0]


def _disputes(
    project: Project, state: ProjectState, changed: set[int]
) -> dict[int, tuple[list[str], float]]:
    """Newly labelled items whose gold label the model, *before* learning it, contradicts with
    at least the project's review confidence: likely label errors, sent to review. Predicted by
    the model of the previous run, so the prediction is out of sample (test-then-train)."""
    threshold = project.review_model_confidence
    learner = state.learner
    ids = [i for i in changed if i in state.labels and i in state.rows]
    if threshold is None or not ids or learner.is_cold():
        return {}
    rows = [state.rows[i] for i in ids]
    X = sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.vstack(rows)
    proba = learner.predict_proba(X)
    found = {}
    for row, item_id in enumerate(ids):
        p = proba[row]
        gold = state.labels[item_id]
        if learner.multi_label:
            guess = [c for c, q in zip(learner.classes, p, strict=True) if q >= 0.5]
            sure = min((float(q) if q >= 0.5 else 1 - float(q)) for q in p)
            if sorted(guess) != sorted(gold) and sure >= threshold:
                found[item_id] = (guess, round(sure, 4))
        else:
            top = int(p.argmax())
            if learner.classes[top] != gold and p[top] >= threshold:
                found[item_id] = ([learner.classes[top]], round(float(p[top]), 4))
    return found


def _training_set(state: ProjectState) -> tuple[Any, list[Label]]:
    ids = sorted(i for i in state.labels if i in state.rows)
    if not ids:
        return np.zeros((0, state.featurizer.n_features)), []
    rows = [state.rows[i] for i in ids]
    X = sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.vstack(rows)
    return X, [state.labels[i] for i in ids]


# --------------------------------------------------------------------------------------------
# Evaluation slice: drawing its items (predicting and scoring them: curation.evaluation)
# --------------------------------------------------------------------------------------------


def _draw_eval_items(project: Project, wanted: int) -> list[int]:
    """`wanted` evaluation items: open ones first, then fresh uniformly random open items.
    Drawn whether or not the model would have picked them: being random is the point."""
    if wanted <= 0:
        return []
    open_samples = list(
        EvalSample.objects.filter(project=project, resolved_at=None, item__needs_annotation=True)
        .order_by("id")
        .values_list("item_id", flat=True)[:wanted]
    )
    missing = wanted - len(open_samples)
    if missing > 0:
        have = set(open_samples)
        drawn = _random_open_items(project, missing + len(have), include_ranked=True)
        fresh = [i for i in drawn if i not in have][:missing]
        if fresh:  # an item is evaluated once: one that was resolved before is not drawn again
            used = EvalSample.objects.filter(project=project, item_id__in=fresh)
            taken = set(used.values_list("item_id", flat=True))
            fresh = [i for i in fresh if i not in taken]
        EvalSample.objects.bulk_create([EvalSample(project=project, item_id=i) for i in fresh])
        open_samples += fresh
    return open_samples


def _weave_eval_items(
    project: Project, training: ProjectTraining, ranked: list[int]
) -> tuple[list[int], list[int]]:
    """Put evaluation items at random places of the ranked head: each place, the top one
    included, holds one with probability `eval_share`. The head is rewritten after every label,
    so about that share of the items served are evaluation items."""
    if training.eval_share <= 0 or not ranked:
        return ranked, []
    slots = np.flatnonzero(_rng.random(len(ranked)) < training.eval_share).tolist()
    evals = _draw_eval_items(project, len(slots))
    held_out = set(evals)
    rest = iter([i for i in ranked if i not in held_out])
    placed = iter(evals)
    woven, slot_set = [], set(slots[: len(evals)])
    for position in range(len(ranked)):
        source = placed if position in slot_set else rest
        item_id = next(source, None)
        if item_id is None:
            item_id = next(rest if source is placed else placed, None)
        if item_id is not None:
            woven.append(item_id)
    return woven, evals


# --------------------------------------------------------------------------------------------
# Ranking the queue
# --------------------------------------------------------------------------------------------


def _random_open_items(project: Project, n: int, *, include_ranked: bool = False) -> list[int]:
    """Up to n open items drawn uniformly at random, in one walk of item_queue_idx.

    Unranked items keep the uniform random priority they got at import (or when they left the
    ranked head), independent of their content, so the items just below a random threshold are
    a uniform random sample. Wraps around when the threshold is near 0. With `include_ranked`,
    the ranked head takes part too: each of its items in place of a random unranked one.
    """
    if n <= 0:
        return []
    cut = float(_rng.random())
    open_items = Item.objects.filter(project=project, needs_annotation=True)
    if include_ranked:
        ranked = list(open_items.filter(priority__gte=1.0).values_list("id", flat=True))
        unranked = _random_open_items(project, n)
        pool = ranked + unranked
        if not pool:
            return []
        # Every open item equally likely: a ranked item stands for itself among the unranked
        # sample, whose size approximates the rest of the pool only when it is small; so weigh
        # by the true counts.
        total = project.remaining_count  # the project's counters (read as this run began)
        share_ranked = len(ranked) / total if total else 0.0
        picks = []
        r_iter, u_iter = iter(_rng.permutation(ranked).tolist()), iter(unranked)
        for _ in range(n):
            source = r_iter if _rng.random() < share_ranked else u_iter
            chosen = next(source, None)
            if chosen is None:
                chosen = next(u_iter if source is r_iter else r_iter, None)
            if chosen is None:
                break
            picks.append(int(chosen))
        return picks
    below = list(
        open_items.filter(priority__lt=cut)
        .order_by("-priority", "id")
        .values_list("id", flat=True)[:n]
    )
    if len(below) < n:
        above = open_items.filter(priority__gte=cut, priority__lt=1.0)
        below += list(
            above.order_by("-priority", "id").values_list("id", flat=True)[: n - len(below)]
        )
    return below


def _sample_size(state: ProjectState) -> int:
    return sum(len(b.ids) for b in state.blocks)


def _sample_ids(state: ProjectState) -> list[int]:
    return [i for b in state.blocks for i in b.ids]


def _drop_from_sample(state: ProjectState, item_ids: set[int]) -> None:
    """Take items out of the sample (answered, deleted), touching only the blocks holding them."""
    if not item_ids:
        return
    kept_blocks = []
    for block in state.blocks:
        keep = [r for r, i in enumerate(block.ids) if i not in item_ids]
        if len(keep) == len(block.ids):
            kept_blocks.append(block)
        elif keep:
            kept_blocks.append(SampleBlock([block.ids[r] for r in keep], block.X[keep]))
    state.blocks = kept_blocks


def _still_open(project: Project, ids: list[int]) -> set[int]:
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Item._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) AND needs_annotation", [ids])
            return {row[0] for row in cursor.fetchall()}
    found: set[int] = set()
    for start in range(0, len(ids), 500):  # SQLite's limit on query parameters
        chunk = ids[start : start + 500]
        found.update(
            Item.objects.filter(pk__in=chunk, needs_annotation=True).values_list("id", flat=True)
        )
    return found


def _grow_sample(project: Project, state: ProjectState, *, check: bool = False) -> None:
    """Add fresh random open items to the sample: SAMPLE_GROW while it is below POOL_SAMPLE,
    else replace its oldest SAMPLE_ROTATE items, so over time the whole pool gets visited."""
    if check and state.blocks:
        ids = _sample_ids(state)
        _drop_from_sample(state, set(ids) - _still_open(project, ids))
    size = _sample_size(state)
    wanted = min(SAMPLE_GROW, POOL_SAMPLE - size)
    if wanted <= 0:
        dropped = 0
        while state.blocks and dropped < SAMPLE_ROTATE:
            dropped += len(state.blocks.pop(0).ids)
        wanted = dropped
    have = set(_sample_ids(state))
    fresh = [i for i in _random_open_items(project, wanted) if i not in have]
    if not fresh:
        return
    X, kept = item_features(project, state.featurizer, fresh)
    if kept:
        state.blocks.append(SampleBlock(list(kept), X))


def _sample_proba(state: ProjectState) -> tuple[list[int], np.ndarray]:
    """(sampled item ids, their class probabilities), block by block (no copy of the rows)."""
    ids = _sample_ids(state)
    parts = [state.learner.predict_proba(b.X) for b in state.blocks]
    k = len(state.schema[0])
    return ids, (np.vstack(parts) if parts else np.zeros((0, k)))


def _sample_matrix(state: ProjectState) -> Any:
    stack = sp.vstack if sp.issparse(state.blocks[0].X) else np.vstack
    return stack([b.X for b in state.blocks])


def _rank(
    project: Project, training: ProjectTraining, state: ProjectState
) -> tuple[list[int], list[int]]:
    """(the ranked head of the queue, its evaluation items).

    Until two classes have labels the model cannot rank at all, so the head is typical items
    of the regions no label covers yet (`_typical_head`). Then it ranks; while some class has
    no label, every other place of the head is such a typical item (the model cannot be
    uncertain about a class it has never seen). Nothing is written here; `_write_ranking` does
    that at the end of the transaction.
    """
    state.scores = None
    if not state.blocks:  # a new worker's first run: it cannot rank an empty sample
        _grow_sample(project, state)
    if not state.blocks:
        return [], []
    if not state.learner.can_rank():
        return [_sample_ids(state)[r] for r in _typical_head(state)], []
    ids, proba = _sample_proba(state)
    state.scores = (ids, proba)  # the items written get their guess from these
    multi = state.learner.multi_label
    k = min(RANKED, len(ids))
    if training.strategy == BATCH_DIVERSE:
        scores = margin(proba, multi_label=multi)
        head = batch_diverse(scores, _sample_matrix(state), min(DIVERSE_HEAD, k), exploration=0.0)
        rest = select(scores, k, exploration=0.0)
        order = list(dict.fromkeys([*head.tolist(), *rest.tolist()]))[:k]
    else:
        scores = get_strategy(training.strategy)(proba, multi_label=multi, rng=_rng)
        order = select(scores, k, exploration=0.0).tolist()
    learner = state.learner
    if learner.unseen_classes() and learner.n_labels < COLD_MIX_LABELS:
        # The head is rewritten after every label and its top served next: the label count's
        # parity says which kind comes first, so one annotator also gets one of each in turn.
        typical = _typical_head(state)
        pair = (typical, order) if learner.n_labels % 2 == 0 else (order, typical)
        order = _alternate(*pair)[:k]
    order = _weave_exploration(order, len(ids), training.exploration)
    return _weave_eval_items(project, training, [ids[r] for r in order])


def _typical_head(state: ProjectState) -> list[int]:
    """Up to COLD_HEAD positions in the sample, typical of the dense regions that no label
    covers yet (`curation.cold_start`), drawn from COLD_CANDIDATES random ones: on a text set
    greedy k-centre, used before, picked outliers (mostly texts of 30 characters or less)."""
    size = _sample_size(state)
    positions = np.arange(size)
    if size > COLD_CANDIDATES:
        positions = np.sort(_rng.choice(size, COLD_CANDIDATES, replace=False))
    # The candidates' rows, block by block: stacking a full sample first costs more.
    parts, start = [], 0
    for block in state.blocks:
        end = start + len(block.ids)
        local = positions[(positions >= start) & (positions < end)] - start
        if local.size:
            parts.append(block.X[local])
        start = end
    X = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.vstack(parts)
    rows = [state.rows[i] for i in state.labels if i in state.rows]
    labelled = (sp.vstack(rows) if sp.issparse(rows[0]) else np.vstack(rows)) if rows else None
    seed = int(_rng.integers(2**31))
    picks = cold_start.typical_picks(X, COLD_HEAD, labelled=labelled, seed=seed)
    return positions[picks].tolist()


def _alternate(first: list[int], second: list[int]) -> list[int]:
    """One from each list in turn, starting with `first`, skipping any already taken."""
    woven: list[int] = []
    taken: set[int] = set()
    sources = [iter(first), iter(second)]
    while sources:
        for source in list(sources):
            pick = next((r for r in source if r not in taken), None)
            if pick is None:
                sources.remove(source)
            else:
                woven.append(pick)
                taken.add(pick)
    return woven


def _weave_exploration(order: list[int], n: int, share: float) -> list[int]:
    """Each place of the head, the first included, holds a random item of the sample with
    probability `share` instead of the next best one. Since the head is rewritten after every
    label, about that share of the items served are picked at random, which keeps the labelled
    set from drifting into the model's own idea of its blind spots."""
    if share <= 0 or not order:
        return order
    explore = _rng.random(len(order)) < share
    if not explore.any():
        return order
    best = iter(order)
    randoms = iter(_rng.permutation(n).tolist())
    woven: list[int] = []
    taken: set[int] = set()
    for flagged in explore:
        for source in (randoms, best) if flagged else (best, randoms):
            pick = next((r for r in source if r not in taken), None)
            if pick is not None:
                break
        if pick is None:
            break
        woven.append(pick)
        taken.add(pick)
    return woven


def _write_ranking(
    project: Project, ranked: Sequence[int], state: ProjectState, version: int
) -> None:
    """Give `ranked` priorities 2 → 1 in order; send other ranked items back to random [0, 1).
    Every item written gets the guess of model `version` when the run scored it, else none.

    The items ranked before are found on item_queue_idx (priority >= 1 is its head), so this
    costs the size of the head, not of the project.
    """
    n = len(ranked)
    keep = set(ranked)
    previous = Item.objects.filter(
        project=project, needs_annotation=True, priority__gte=1.0, priority__lt=PINNED_PRIORITY
    )
    demoted = [pk for pk in previous.values_list("id", flat=True) if pk not in keep]
    ids = [*ranked, *demoted]
    priorities = [1.0 + (n - pos) / (n + 1) for pos in range(n)]
    priorities += [float(p) for p in _rng.random(len(demoted))]
    guesses = ranking_write.head_suggestions(
        state.schema[0], state.scores, ids, multi_label=state.learner.multi_label
    )
    ranking_write.ranking_write(project, ids, priorities, guesses, version=version)


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------


def _save_version(
    project: Project,
    training: ProjectTraining,
    state: ProjectState,
    facts: tuple[int, datetime | None, int],
    clock: _Clock,
) -> ModelVersion:
    count, last_change, ranked = facts
    learner = state.learner
    previous = training.current_version
    # Carried over until the worker's accuracy estimate job refreshes it (`curation.jobs`).
    accuracy = previous.estimated_accuracy if previous else None
    cv_labels = (previous.metrics or {}).get("cv_labels", 0) if previous else 0
    number = (project.model_versions.aggregate(v=Max("version"))["v"] or 0) + 1
    artifact = Path(f"project-{project.pk}") / f"v{number}.dpmodel"
    classes = list(state.schema[0])
    balance = {name: int(n) for name, n in zip(classes, learner.label_counts, strict=True)}
    metrics = {
        "labels_used": int(learner.n_labels),
        "class_balance": balance,
        "estimated_accuracy": accuracy,
        "cv_labels": cv_labels,
        "annotations_counted": count,
        "last_label_at": last_change.isoformat() if last_change else None,
        # No suggestions until the model has seen every class (`curation.status`).
        "cold": bool(learner.unseen_classes()),
        "ranking": learner.can_rank(),
        "needs": class_needs(classes, learner.label_counts),
        "pool_sample": _sample_size(state),
        "ranked": ranked,
        "eval": eval_summary(project),
        "timings_ms": dict(clock.laps),
    }
    path = models_dir() / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_learner(
        learner,
        path,
        featurizer_name=state.featurizer.name,
        featurizer_version=state.featurizer.version,
        metrics=metrics,
    )
    now = timezone.now()
    version = ModelVersion.objects.create(
        project=project,
        version=number,
        artifact=artifact.as_posix(),
        featurizer_name=state.featurizer.name,
        featurizer_version=state.featurizer.version,
        labels_used=learner.n_labels,
        class_balance=balance,
        estimated_accuracy=accuracy,
        metrics=metrics,
        strategy=training.strategy,
        trained_at=now,
        duration_ms=int(clock.total()),
    )
    training.current_version = version
    training.labels_seen = count
    training.labels_until = last_change
    training.trained_at = now
    training.save(update_fields=["current_version", "labels_seen", "labels_until", "trained_at"])
    # robust: a failed clean-up is logged, never taken for a failed run.
    transaction.on_commit(lambda: versions.versions_prune(project_id=project.pk), robust=True)
    return version


class _Clock:
    """Milliseconds per step of a run, kept in the version's metrics and the benchmark."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self.last) * 1000, 2)
        self.last = now

    def total(self) -> float:
        return (time.perf_counter() - self.started) * 1000
