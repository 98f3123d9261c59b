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
  (`curation.pool_sample`), so a run costs the same at 10k and 1M items;
- the feature rows of the open evaluation items, which each run predicts again.

After every label the learner is refit on all labels (warm-started), the sample is scored with the
project's strategy, and the top `RANKED` items — with the exploration share and the evaluation
slice woven in — get priorities `1 + rank score`, above every unranked item (priorities in
[0, 1)). The next-item query still walks one index. Items ranked before but not any more go back
to a fresh random priority. Then a new model version is saved (atomic file + row,
`curation.versions`) and the project's websocket group hears "model.updated".

Only what the re-ranked head needs happens before the announcement. After it: the evaluation
items' predictions (before the next run, which may score them), pruning old versions, and the
pool sample's rotation, which waits while labels are pending (`SAMPLE_DEFER_RUNS` at most) so
the next label's run starts at once.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import transaction
from django.db.models import Max

from annotations.events import project_group, publish
from annotations.gold import reviews_for_model_disagreement
from annotations.models import PINNED_PRIORITY, GoldLabel, Item, Project
from annotations.webhooks.events import model_version_data, webhook_event
from annotations.webhooks.models import WebhookEvent
from curation import (
    cold_start,
    endpoint_ranking,
    evaluation,
    prediction_ranking,
    ranking_write,
    recycling,
    versions,
)
from curation.evaluation import eval_items_weave, eval_summary
from curation.features import item_features
from curation.learner import IncrementalLearner
from curation.models import BATCH_DIVERSE, ModelVersion, ProjectTraining
from curation.pool_sample import (
    POOL_SAMPLE,
    SAMPLE_CHECK_RUNS,
)
from curation.queue_head import alternate, weave_exploration
from curation.status import announcement, model_status
from curation.strategies import batch_diverse, get_strategy, margin, select
from curation.training_state import ProjectState, eval_rows, training_set
from curation.vector_features import project_feature_set, project_featurizer
from curation.versions import Clock

logger = logging.getLogger(__name__)

__all__ = [
    "POOL_SAMPLE",
    "reseed",
    "RANKED",
    "rank_by_endpoint",
    "TrainingResult",
    "forget_states",
    "eval_summary",
    "model_status",
    "learner_snapshot",
    "train",
    "wait_while_training",
]

#: Runs in a row that may leave the pool sample's rotation for later because labels are waiting.
SAMPLE_DEFER_RUNS = 4
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


@dataclass
class TrainingResult:
    """What one run did; `announced` is the message sent to the project's websocket group."""

    version: ModelVersion
    ranked: int
    announced: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # the same steps' CPU time


_states: dict[int, ProjectState] = {}
_rng = np.random.default_rng()


def reseed(seed: int | None) -> None:
    """Make the trainer's random choices (exploration, samples) repeatable: tests, benchmarks."""
    global _rng
    _rng = np.random.default_rng(seed)


_states_lock = threading.Lock()
_runs_in_progress = 0
_requests_waiting = 0  # training requests queued in this process's worker, not started yet
_last_busy = 0.0  # monotonic time the last run ended or the last request was queued
_runs_changed = threading.Condition()


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
    with _run_in_progress():
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


@contextmanager
def _run_in_progress() -> Iterator[None]:
    global _runs_in_progress, _last_busy
    with _runs_changed:
        _runs_in_progress += 1
    try:
        yield
    finally:
        with _runs_changed:
            _runs_in_progress -= 1
            _last_busy = time.monotonic()
            _runs_changed.notify_all()


def requests_waiting(count: int) -> None:
    """The worker has `count` training requests queued that have not started (its pacer
    says so): follow-up work waits for them too, not only for the runs in progress."""
    global _requests_waiting, _last_busy
    with _runs_changed:
        _requests_waiting = count
        _last_busy = time.monotonic()
        _runs_changed.notify_all()


def wait_for_a_pause(quiet: float, limit: float) -> bool:
    """Wait until this process has trained nothing and queued no request for `quiet` seconds
    (at most `limit` s); True if such a pause came. Automatic data analyses start only then: a
    team labelling without a break would otherwise share the worker with a pass over every
    item after every few hundred labels."""
    deadline = time.monotonic() + limit
    with _runs_changed:
        while True:
            now = time.monotonic()
            idle = _runs_in_progress == 0 and _requests_waiting == 0
            if idle and now - _last_busy >= quiet:
                return True
            if now >= deadline:
                return False
            wait = quiet - (now - _last_busy) if idle else quiet
            _runs_changed.wait(max(0.05, min(wait, deadline - now)))


def wait_while_training(timeout: float = 10.0) -> bool:
    """Wait until no training run of this process is in progress or waiting to start (at most
    `timeout` s); True if none is. Follow-up work that shares the worker's CPU and its GIL (the
    accuracy estimate's refits, the data analyses' chunks) calls it between its steps, so a
    label's run waits for at most the step in progress, and does not share the CPU with the
    next one (an analysis beside the runs took 100k-item runs from 142 to 200 ms p50). In a
    retiring worker past its grace, raises `recycling.HandedOver` instead."""
    recycling.checkpoint()
    with _runs_changed:
        idle = _runs_changed.wait_for(
            lambda: _runs_in_progress == 0 and _requests_waiting == 0, timeout
        )
    recycling.checkpoint()
    return idle


def _after_announcement(project: Project, state: ProjectState, result: TrainingResult) -> None:
    """Work the annotators need not wait for: predictions for the evaluation items just placed
    (before any of their labels can be processed: this worker handles the next request only
    after this), pruning old versions, and the pool sample's growth or rotation, left for a
    later run while labels are waiting (at most SAMPLE_DEFER_RUNS runs in a row). The accuracy
    estimate and the weighted consensus are the worker's follow-up jobs (`curation.jobs`)."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    X, kept = eval_rows(project, state)
    evaluation.eval_predict(learner=state.learner, X=X, kept=kept, version=result.version.version)
    try:
        versions.versions_prune(project_id=project.pk)
    except Exception:  # a failed clean-up is logged, never taken for a failed run
        logger.exception("pruning the versions of project %s failed", project.pk)
    until = result.version.metrics.get("last_label_at")
    if state.deferred < SAMPLE_DEFER_RUNS and _labels_waiting(project, until):
        state.deferred += 1
    else:
        state.deferred = 0
        state.sample.refresh(
            project, state.featurizer, _rng, check=state.runs % SAMPLE_CHECK_RUNS == 0
        )
    result.timings_ms["after"] = round((time.perf_counter() - started) * 1000, 2)
    result.cpu_ms["after"] = round((time.thread_time() - started_cpu) * 1000, 2)


def _labels_waiting(project: Project, until: str | None) -> bool:
    """True when a gold label changed after the one the run just learned: its training request
    is on its way (or waiting), so work that can wait should."""
    waiting = GoldLabel.objects.filter(project=project)
    if until is not None:
        waiting = waiting.filter(updated_at__gt=until)
    return waiting.exists()


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
    state.learner.fit(*training_set(state))
    return state.learner


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def _schema(project: Project) -> tuple:
    """What a state's rows and model depend on: a change means a new state (new features)."""
    classes = tuple(project.class_names())
    features = (project_feature_set(project), project.vector_dim)
    return (classes, project.is_multi_label, project.item_kind, features)


def _new_state(project: Project) -> ProjectState:
    schema = _schema(project)
    featurizer = project_featurizer(project, schema[3][0])
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
    clock = Clock()
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
            _rank_by_predictions_only(project, training, state)
            return None
        if training.current_version_id is not None and (
            count == training.labels_seen and last_change == training.labels_until
        ):
            return None
        clock.lap("lock")
        changed = _catch_up(project, state, count, last_change)
        state.sample.drop(changed)
        clock.lap("catch_up")
        evaluation.eval_resolve(project=project, changed=changed, labels=state.labels)
        disputed = _disputes(project, state, changed)
        X, y = training_set(state)
        state.learner.fit(X, y)
        clock.lap("fit")
        reviews_for_model_disagreement(project, disputed)
        ranked, evals = _rank(project, training, state)
        state.pending_eval = evals
        clock.lap("rank")
        facts = {
            "count": count,
            "last_change": last_change,
            "ranked": len(ranked),
            "ranked_by": "endpoint" if state.ranked_by_endpoint else "model",
            "pool_sample": state.sample.size(),
        }
        version = versions.version_save(
            project=project,
            training=training,
            learner=state.learner,
            featurizer=state.featurizer,
            facts=facts,
            clock=clock,
        )
        clock.lap("save")
        # In the version's transaction: no hook hears of a version that rolled back.
        webhook_event(project, WebhookEvent.MODEL_VERSION, lambda: model_version_data(version))
        # Last, so the head's rows are locked (and skipped by next_items) only until the commit.
        _write_ranking(project, ranked, state, version.version)
        clock.lap("write")
    state.runs += 1
    state.version = version.version
    announced = announcement(project, training, version) | {
        "since": 0,
        "ranked": len(ranked),
    }
    return TrainingResult(version, len(ranked), announced, clock.laps, clock.cpu_laps)


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


# --------------------------------------------------------------------------------------------
# Ranking the queue
# --------------------------------------------------------------------------------------------


def _rank(
    project: Project, training: ProjectTraining, state: ProjectState
) -> tuple[list[int], list[int]]:
    """(the ranked head of the queue, its evaluation items).

    Until two classes have labels the model cannot rank at all, so the head is typical items
    of the regions no label covers yet (`_typical_head`). Then it ranks; while some class has
    no label, every other place of the head is such a typical item (the model cannot be
    uncertain about a class it has never seen). While some class has no label, items with an
    imported prediction come first, least sure first (`curation.prediction_ranking`). Nothing
    is written here; `_write_ranking` does that at the end of the transaction. While the
    project's prediction endpoint ranks the queue, the head is its (`_endpoint_head`).
    """
    state.scores = None
    by_endpoint = _endpoint_head(project, training, state, suggest=True)
    state.ranked_by_endpoint = bool(by_endpoint)
    if by_endpoint:
        return eval_items_weave(project, training, by_endpoint, _rng)
    by_predictions: list[int] = []
    if state.learner.unseen_classes():
        # Until our model has seen every class, a team's own predictions know better: their
        # least sure items first, then the head our model would have.
        by_predictions = _prediction_head(project, training, state)
    ranked = by_predictions
    if len(by_predictions) < RANKED:
        own = _rank_own(project, training, state)
        ranked = list(dict.fromkeys([*by_predictions, *own]))[:RANKED]
    _sample_include(project, state, by_predictions)  # after: an empty sample is drawn first
    if not state.learner.can_rank():
        return ranked, []  # no model to test yet: no evaluation items
    return eval_items_weave(project, training, ranked, _rng)


def _rank_own(project: Project, training: ProjectTraining, state: ProjectState) -> list[int]:
    """Our model's head of the queue (item ids), as `_rank` describes, before the evaluation
    items are woven in."""
    if not state.sample:  # a new worker's first run: it cannot rank an empty sample
        state.sample.refresh(project, state.featurizer, _rng)
    if not state.sample:
        return []
    if not state.learner.can_rank():
        return [_sample_ids(state)[r] for r in _typical_head(state)]
    ids, proba = state.sample.proba(state.learner, len(state.schema[0]))
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
        order = alternate(*pair)[:k]
    order = weave_exploration(order, len(ids), training.exploration, _rng)
    return [ids[r] for r in order]


def _prediction_head(project: Project, training: ProjectTraining, state: ProjectState) -> list[int]:
    """The head ranked by the imported predictions' uncertainty (`curation.prediction_ranking`),
    with the exploration share of random sampled items; empty when no open item has one."""
    head = prediction_ranking.uncertain_items(project, RANKED, _rng)
    if not head:
        return []
    taken = set(head)
    pool = head + [i for i in _sample_ids(state) if i not in taken]
    return [
        pool[r]
        for r in weave_exploration(list(range(len(head))), len(pool), training.exploration, _rng)
    ]


def _sample_include(project: Project, state: ProjectState, item_ids: list[int]) -> None:
    """Add to the pool sample the items of a head it did not choose (the sample is drawn below
    the head), so our model scores them once it ranks."""
    have = set(state.sample.ids())
    missing = [i for i in item_ids if i not in have]
    if missing:
        X, kept = item_features(project, state.featurizer, missing)
        state.sample.append(kept, X)


def _rank_by_predictions_only(
    project: Project, training: ProjectTraining, state: ProjectState
) -> None:
    """Before the first label: rank the queue by the imported predictions, once per change of
    them (an upload asks for a run). No evaluation items yet: there is no model to test. Not
    while the prediction endpoint ranks the queue: its runs write the head themselves."""
    if endpoint_ranking.endpoint_ranks(project):
        return
    seen = prediction_ranking.predictions_fingerprint(project)
    if seen is None or seen == state.predictions_ranked:
        return
    head = _prediction_head(project, training, state)
    if head:
        _write_ranking(project, head, state, None)
    state.predictions_ranked = seen


def _endpoint_head(
    project: Project, training: ProjectTraining, state: ProjectState, *, suggest: bool
) -> list[int]:
    """The head ranked by the prediction endpoint's probabilities (`curation.endpoint_ranking`)
    with the exploration share of random candidates; empty unless the endpoint ranks and has
    predicted some open item. With `suggest`, our model's guesses for the head go with it."""
    if not endpoint_ranking.endpoint_ranks(project):
        return []
    ids, order = endpoint_ranking.endpoint_order(project, training.strategy, RANKED, _rng)
    head = [ids[r] for r in weave_exploration(order, len(ids), training.exploration, _rng)]
    if suggest and head and state.learner.can_rank():
        X, kept = item_features(project, state.featurizer, head)
        if kept:
            state.scores = (kept, state.learner.predict_proba(X))
    return head


def rank_by_endpoint(project_id: int) -> int:
    """Rewrite the head of the queue from the endpoint's predictions just stored, without
    training (`curation.endpoint_run`); returns the items ranked. Under the project's training
    lock, so a training run and this never write the head at once; without evaluation items
    (the next training run weaves them in, with the predictions they need)."""
    with _run_in_progress():
        project = Project.objects.filter(pk=project_id).first()
        if project is None:
            return 0
        ProjectTraining.objects.get_or_create(project=project)
        state = _state_for(project)
        with state.lock, transaction.atomic():
            training = ProjectTraining.objects.select_for_update(of=("self",)).get(project=project)
            state.scores = None
            head = _endpoint_head(project, training, state, suggest=False)
            if head:
                _write_ranking(project, head, state, None)
        return len(head)


def _sample_ids(state: ProjectState) -> list[int]:
    return state.sample.ids()


def _sample_matrix(state: ProjectState) -> Any:
    return state.sample.matrix()


def _typical_head(state: ProjectState) -> list[int]:
    """Up to COLD_HEAD positions in the sample, typical of the dense regions that no label
    covers yet (`curation.cold_start`), drawn from COLD_CANDIDATES random ones: on a text set
    greedy k-centre, used before, picked outliers (mostly texts of 30 characters or less)."""
    size = state.sample.size()
    positions = np.arange(size)
    if size > COLD_CANDIDATES:
        positions = np.sort(_rng.choice(size, COLD_CANDIDATES, replace=False))
    # The candidates' rows, block by block: stacking a full sample first costs more.
    parts, start = [], 0
    for block in state.sample.blocks:
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


def _write_ranking(
    project: Project, ranked: Sequence[int], state: ProjectState, version: int | None
) -> None:
    """Give `ranked` priorities 2 → 1 in order; send other ranked items back to random [0, 1).
    Every item written gets the guess of model `version` when the run scored it, else keeps
    the one it had (`curation.ranking_write`).

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
