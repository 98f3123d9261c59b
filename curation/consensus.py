"""Weighted consensus (CROWDLAB): gold labels that weigh each annotator by their measured quality
and the model's opinion, for single-label projects whose `Project.consensus` says so.

A plain majority counts a careless annotator like a careful one and has no answer for a tie.
cleanlab's CROWDLAB estimates how much to trust each annotator (agreement with the others) and
the model (agreement with the majority), and gives each item the class with the highest weighted
posterior. `consensus_update` runs it over every answered item and writes the `consensus` gold
rows that `annotations.gold.gold_refresh` then keeps until the item's answer count changes.

The model's probabilities are out of sample: the current model was fitted on these very labels,
so its probabilities for them echo the labels back and CROWDLAB would trust it blindly. Instead a
fresh estimator of the same kind (logistic regression with the current model's C and max_iter)
is cross-validated on the items' majority or adjudicated labels, and items without one (ties)
get the fold models' average. Those targets depend only on the answers and review decisions, not
on the previous consensus, so a rerun on unchanged answers writes nothing; a consensus that fed
back into its own targets could flip rows, and every flip retrains the model. Five refits cost
about what the trainer's cross-validated accuracy estimate costs. With too few labels to
cross-validate, the current model's (in-sample) probabilities are used, and the result says so.

Gold rows are written only where the label or source changes (`GoldLabel.updated_at` drives
retraining), never over a reviewer's decision, and only if the row is unchanged since it was
read: a row that got a new answer meanwhile waits for the next run.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from annotations.gold import Gold, derive
from annotations.models import Annotation, GoldLabel, GoldSource, Project
from curation import artifacts
from curation.features import item_features
from curation.featurizers import featurizer_for
from curation.learner import IncrementalLearner
from curation.models import ProjectTraining
from curation.out_of_sample import out_of_sample_proba
from curation.training_requests import request_training

logger = logging.getLogger(__name__)

__all__ = ["ConsensusRefused", "ConsensusResult", "consensus_due", "consensus_update"]

#: A new consensus is due (a job of the training worker, `curation.jobs`) when the answers changed
#: by this share of the count at the last one, and by at least MIN_NEW_ANSWERS: the cost grows
#: with the project, so the runs thin out geometrically like the accuracy estimate (CV_GROWTH).
GROWTH = 0.1
MIN_NEW_ANSWERS = 20
#: Folds of the out-of-sample probabilities.
FOLDS = 5


class ConsensusRefused(ValueError):
    """The project cannot have a weighted consensus (multi-label, or it does not use one)."""


@dataclass
class ConsensusResult:
    """What one run did. `method` is "crowdlab", or "majority" when it fell back (`reason`)."""

    method: str
    reason: str = ""
    items: int = 0  # items taken into account (with an answer in the schema and features)
    annotators: int = 0
    answers: int = 0  # non-skipped answers of the project
    changed: int = 0  # gold rows written
    adjudicated: int = 0  # items decided by a reviewer, left as they are
    busy: int = 0  # rows that changed while this ran, left for the next run
    pred_probs: str = ""  # where the model's probabilities came from
    model_weight: float | None = None
    annotator_quality: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float = 0.0


@dataclass
class _Answers:
    """A project's non-skipped answers: raw per item, and as CROWDLAB's items × annotators
    matrix of class indices (NaN: no answer) over the items with an answer in the schema."""

    raw: dict[int, list[list[str]]]
    item_ids: list[int]
    annotator_ids: list[int]
    matrix: np.ndarray
    count: int


def consensus_due(project: Project) -> bool:
    """True when a crowdlab project's answers changed enough since its last consensus."""
    if project.consensus != Project.Consensus.CROWDLAB or project.is_multi_label:
        return False
    last = (
        ProjectTraining.objects.filter(project=project)
        .values_list("consensus_answers", flat=True)
        .first()
    ) or 0
    # An index-only count on annotation_answered_idx.
    answers = Annotation.objects.filter(project=project, skipped=False).count()
    return abs(answers - last) >= max(MIN_NEW_ANSWERS, math.ceil(last * GROWTH))


def consensus_update(project: Project) -> ConsensusResult:
    """Recompute the weighted consensus of `project` and write the gold rows that change.

    Falls back to the plain majority (and says why in the result) when CROWDLAB cannot run:
    no model yet, fewer than two annotators or classes, no item answered twice, or data
    cleanlab refuses. Raises `ConsensusRefused` for a project that is multi-label or does not
    use the weighted consensus.
    """
    if project.is_multi_label:
        raise ConsensusRefused(
            f"{project}: weighted consensus (CROWDLAB) is for single-label projects only."
        )
    if project.consensus != Project.Consensus.CROWDLAB:
        raise ConsensusRefused(
            f"{project}: gold labels are set to {project.get_consensus_display()!r}; "
            "choose the CROWDLAB consensus for the project first."
        )
    started = time.perf_counter()
    classes = project.class_names()
    # Gold rows first, answers second: a row that changes in between gets a newer updated_at
    # than the one read here, and `_write` leaves it alone.
    current = {
        item_id: (labels, source, updated_at)
        for item_id, labels, source, updated_at in GoldLabel.objects.filter(
            project=project
        ).values_list("item_id", "labels", "source", "updated_at")
    }
    answers = _read_answers(project, classes)
    majority = {
        item_id: gold
        for item_id, given in answers.raw.items()
        if (gold := derive(given, classes, multi_label=False)) is not None
    }
    result = ConsensusResult(
        method="crowdlab",
        items=len(answers.item_ids),
        annotators=len(answers.annotator_ids),
        answers=answers.count,
    )
    targets = dict(majority)
    reason = _cannot_run(classes, answers)
    learner = None if reason else _current_learner(project, classes)
    if not reason and learner is None:
        reason = "no trained model for the current label schema yet"
    if not reason:
        found = _crowdlab(project, classes, answers, _known_labels(current, majority), learner)
        if isinstance(found, str):
            reason = found
        else:
            # Only items two or more annotators answered: on a lone answer the model would
            # overrule the one person who looked (and could erase a rare class unnoticed).
            targets.update(
                (i, gold) for i, gold in found.labels.items() if len(answers.raw.get(i, ())) >= 2
            )
            result.items, result.annotators = len(found.labels), found.annotators
            result.pred_probs, result.model_weight = found.pred_probs, found.model_weight
            result.annotator_quality = found.quality
    if reason:
        result.method, result.reason = "majority", reason
    result.changed, result.adjudicated, result.busy = _write(current, targets)
    _record(project, result)
    if result.changed:
        request_training(project.pk)  # the model learns the new gold labels now, not at the sweep
    result.duration_ms = round((time.perf_counter() - started) * 1000, 1)
    logger.info(
        "consensus of project %s: %s%s, %d items, %d rows changed, %.0f ms",
        project.pk,
        result.method,
        f" ({result.reason})" if result.reason else "",
        result.items,
        result.changed,
        result.duration_ms,
    )
    return result


def _read_answers(project: Project, classes: list[str]) -> _Answers:
    raw: dict[int, list[list[str]]] = defaultdict(list)
    index = {name: k for k, name in enumerate(classes)}
    known: dict[tuple[int, int], int] = {}
    count = 0
    rows = Annotation.objects.filter(project=project, skipped=False).values_list(
        "item_id", "annotator_id", "labels"
    )
    for item_id, annotator_id, labels in rows.iterator(chunk_size=5000):
        count += 1
        raw[item_id].append(labels)
        # Single-label: the first class named; an answer with no class of the schema is left out.
        if labels and labels[0] in index:
            known[(item_id, annotator_id)] = index[labels[0]]
    item_ids = sorted({i for i, _ in known})
    annotator_ids = sorted({a for _, a in known})
    row = {i: r for r, i in enumerate(item_ids)}
    column = {a: c for c, a in enumerate(annotator_ids)}
    matrix = np.full((len(item_ids), len(annotator_ids)), np.nan)
    for (item_id, annotator_id), k in known.items():
        matrix[row[item_id], column[annotator_id]] = k
    return _Answers(dict(raw), item_ids, annotator_ids, matrix, count)


def _only(answers: _Answers, item_ids: list[int]) -> _Answers:
    """The answers of some of the items (in that order), without annotators left with none."""
    rows = {i: r for r, i in enumerate(answers.item_ids)}
    matrix = answers.matrix[[rows[i] for i in item_ids]]
    used = ~np.isnan(matrix).all(axis=0)
    annotators = [a for a, u in zip(answers.annotator_ids, used, strict=True) if u]
    return _Answers(answers.raw, list(item_ids), annotators, matrix[:, used], answers.count)


def _cannot_run(classes: list[str], answers: _Answers) -> str:
    """Why CROWDLAB cannot run on these answers ("" if it can); cleanlab refuses these."""
    if len(classes) < 2:
        return "the label schema has fewer than two classes"
    if len(answers.annotator_ids) < 2:
        return "fewer than two annotators have answered"
    if not ((~np.isnan(answers.matrix)).sum(axis=1) >= 2).any():
        return "no item has answers from two annotators, so they cannot be compared"
    if np.unique(answers.matrix[~np.isnan(answers.matrix)]).size < 2:
        return "every answer is the same class"
    return ""


def _known_labels(current: dict[int, tuple], majority: dict[int, Gold]) -> dict[int, str]:
    """Each item's adjudicated, else majority class: the targets of the out-of-sample model.
    Not the gold rows themselves, which hold the previous consensus (see the module docs)."""
    out = {}
    for item_id, (labels, source, _) in current.items():
        if source == GoldSource.ADJUDICATED and labels:
            out[item_id] = labels[0]
    for item_id, gold in majority.items():
        if item_id not in out and gold.labels:
            out[item_id] = gold.labels[0]
    return out


def _current_learner(project: Project, classes: list[str]) -> IncrementalLearner | None:
    """The current model, if it was trained for today's classes (None: not yet, or retrain)."""
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    version = training.current_version if training else None
    if version is None:
        return None
    try:
        learner, _ = artifacts.read_model_file(
            version.path,
            featurizer_name=version.featurizer_name,
            featurizer_version=version.featurizer_version,
        )
    except artifacts.ModelFileError:
        logger.warning("consensus of project %s: model v%s unreadable", project.pk, version.version)
        return None
    return learner if learner.classes == classes else None


@dataclass
class _Found:
    labels: dict[int, Gold]  # item id → consensus
    annotators: int
    pred_probs: str
    model_weight: float
    quality: list[dict[str, Any]]


def _crowdlab(
    project: Project,
    classes: list[str],
    answers: _Answers,
    known: dict[int, str],
    learner: IncrementalLearner,
) -> _Found | str:
    """CROWDLAB's consensus of the items with features, or why it could not run."""
    # Imported here: cleanlab brings pandas, which the web processes (that import the trainer,
    # and so this module) have no use for.
    from cleanlab.multiannotator import get_label_quality_multiannotator

    X, kept = item_features(project, featurizer_for(project.item_kind), answers.item_ids)
    if len(kept) < len(answers.item_ids):  # unreadable images: no probabilities, no consensus
        answers = _only(answers, kept)
        if reason := _cannot_run(classes, answers):
            return reason
    index = {name: k for k, name in enumerate(classes)}
    y = np.array([index.get(known.get(item_id, ""), -1) for item_id in kept], dtype=int)
    pred_probs, source = _pred_probs(learner, X, y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ties broken at random, classes no one chose
            found = get_label_quality_multiannotator(
                answers.matrix,
                pred_probs,
                return_detailed_quality=False,
                return_weights=True,
                verbose=False,
            )
    except ValueError as exc:
        return f"cleanlab refused the answers: {exc}"
    quality = found["label_quality"]
    consensus = quality["consensus_label"].to_numpy()
    agreement = quality["annotator_agreement"].to_numpy()
    if np.isnan(agreement).any():
        return "cleanlab found no consensus for some items"
    labels = {
        item_id: Gold(
            [classes[int(consensus[r])]],
            GoldSource.CONSENSUS,
            float(agreement[r]),
            len(answers.raw[item_id]),
        )
        for r, item_id in enumerate(kept)
    }
    return _Found(
        labels,
        len(answers.annotator_ids),
        source,
        round(float(found["model_weight"]), 4),
        _annotator_quality(found["annotator_stats"], answers, classes),
    )


def _pred_probs(learner: IncrementalLearner, X: Any, y: np.ndarray) -> tuple[np.ndarray, str]:
    """(n, k) out-of-sample class probabilities for the rows of X, and where they came from.

    `y`: each row's class index (-1: no label); see `out_of_sample_proba`. Too few labels for
    two folds: the current model's probabilities, in sample.
    """
    out, fitted = out_of_sample_proba(
        X,
        y,
        len(learner.classes),
        C=learner.params["C"],
        max_iter=learner.params["max_iter"],
        folds=FOLDS,
        fallback=learner.predict_proba,
    )
    if not fitted:
        return out, "current model (in sample: too few labels for folds)"
    labelled = y[y >= 0]
    folds = min(FOLDS, int(np.bincount(labelled).max()))
    return out, f"cross-validated ({folds} folds)"


def _annotator_quality(stats: Any, answers: _Answers, classes: list[str]) -> list[dict]:
    """cleanlab's annotator_stats (lowest quality first) as JSON-ready dicts with usernames."""
    User = get_user_model()
    names = dict(
        User.objects.filter(pk__in=answers.annotator_ids).values_list("pk", User.USERNAME_FIELD)
    )
    out = []
    for column, row in stats.iterrows():
        annotator_id = answers.annotator_ids[int(column)]
        out.append(
            {
                "annotator_id": annotator_id,
                "username": names.get(annotator_id, ""),
                # NaN when the annotator shares no item with another one.
                "quality": _number(row["annotator_quality"]),
                "agreement": _number(row["agreement_with_consensus"]),
                "worst_class": classes[int(row["worst_class"])],
                "answers": int(row["num_examples_labeled"]),
            }
        )
    return out


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def _write(current: dict[int, tuple], targets: dict[int, Gold]) -> tuple[int, int, int]:
    """Write the target label of each item whose gold row differs in label or source.

    Returns (rows written, adjudicated rows left alone, rows that changed since they were read).
    Each update is guarded by the updated_at read at the start, in the UPDATE itself, so a row
    that got a new answer or a decision meanwhile is never written over.
    """
    adjudicated = 0
    wanted: list[tuple[int, Gold, datetime]] = []
    for item_id, gold in targets.items():
        if item_id not in current:  # no row: gold_refresh decides whether it gets one
            continue
        labels, source, seen = current[item_id]
        if source == GoldSource.ADJUDICATED:
            adjudicated += 1
        elif labels != gold.labels or source != gold.source:
            wanted.append((item_id, gold, seen))
    if not wanted:
        return 0, adjudicated, 0
    wanted.sort(key=lambda w: w[0])
    ids = [w[0] for w in wanted]
    now = timezone.now()
    written = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(GoldLabel._meta.db_table)
            with connection.cursor() as cursor:
                # Lock in item order first, the order `gold_refresh` locks rows in, so a rebuild
                # running meanwhile cannot deadlock with this (an UPDATE's join has no order).
                cursor.execute(
                    f"SELECT item_id FROM {table} WHERE item_id = ANY(%s) ORDER BY item_id "
                    "FOR UPDATE",
                    [ids],
                )
                cursor.execute(
                    f"UPDATE {table} g SET labels = v.l::jsonb, source = v.s, agreement = v.a, "
                    "updated_at = %s FROM unnest(%s::bigint[], %s::text[], %s::text[], "
                    "%s::float8[], %s::timestamptz[]) AS v(id, l, s, a, seen) "
                    "WHERE g.item_id = v.id AND g.updated_at = v.seen AND g.source <> %s",
                    [
                        now,
                        ids,
                        [json.dumps(w[1].labels) for w in wanted],
                        [w[1].source for w in wanted],
                        [w[1].agreement for w in wanted],
                        [w[2] for w in wanted],
                        GoldSource.ADJUDICATED,
                    ],
                )
                written = cursor.rowcount
        else:
            for item_id, gold, seen in wanted:
                written += (
                    GoldLabel.objects.filter(item_id=item_id, updated_at=seen)
                    .exclude(source=GoldSource.ADJUDICATED)
                    .update(
                        labels=gold.labels,
                        source=gold.source,
                        agreement=gold.agreement,
                        updated_at=now,
                    )
                )
    return written, adjudicated, len(wanted) - written


def _record(project: Project, result: ConsensusResult) -> None:
    """Keep the annotators' quality and the run's facts on the project's training row."""
    ProjectTraining.objects.update_or_create(
        project=project,
        defaults={
            "annotator_quality": result.annotator_quality,
            "consensus_at": timezone.now(),
            "consensus_answers": result.answers,
            "consensus_note": result.reason[:300],
        },
    )
