"""Training from the database: the catch-up path of the model in the loop.

`train_project_once` refits a project's model on *all* its labels as stored in the database, so
it is always correct after a restart or a lost event: the database, not the channel, is the
source of truth. It runs under a row lock on the project's `ProjectTraining`, so one project
trains in one place at a time, and it skips the work when no label changed since the last run.
After training it rescores a bounded set of open items and writes their queue priority, so the
next-item query (one walk of `item_queue_idx`) serves the most uncertain items first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from annotations.models import Annotation, Item, Project
from curation import artifacts
from curation.featurizers import Featurizer, featurizer_for
from curation.learner import IncrementalLearner
from curation.models import ModelVersion, ProjectTraining, models_dir
from curation.strategies import get_strategy

logger = logging.getLogger(__name__)

__all__ = ["RESCORE_CANDIDATES", "current_model", "train_project_once"]

#: Open items rescored after each training: the head of the queue plus a random slice. Bounded
#: so a retrain costs the same at 10k and 1M items; the full pool is rescored elsewhere.
RESCORE_CANDIDATES = 2_000
#: Rows featurized per batch, to bound memory for image projects and large label sets.
_CHUNK = 500

Label = str | list[str]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def train_project_once(project: Project, *, now: datetime | None = None) -> ModelVersion | None:
    """Retrain `project` on all its labels and re-rank part of its queue; None if nothing to do.

    Nothing to do means: no label yet, or the labels are unchanged since the model we have (same
    count of non-skipped answers and same latest edit). A second trainer waits on the lock and
    then sees the first one's result, so racing workers produce one version, not two.
    """
    training, _ = ProjectTraining.objects.get_or_create(project=project)
    with transaction.atomic():
        training = ProjectTraining.objects.select_for_update().get(pk=training.pk)
        count, last_edit = _label_fingerprint(project)
        unchanged = count == training.labels_seen and not _edited_since(training, last_edit)
        if count == 0 or (training.current_version_id is not None and unchanged):
            return None
        return _train(project, training, (count, last_edit), now or timezone.now())


def current_model(project: Project) -> IncrementalLearner | None:
    """The project's current learner, loaded from its file (checksum and feature space checked).

    Raises `artifacts.ModelFileError` for a corrupt or tampered file rather than ranking with it.
    """
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    version = training.current_version if training else None
    if version is None:
        return None
    learner, _ = artifacts.read_model_file(
        version.path,
        featurizer_name=version.featurizer_name,
        featurizer_version=version.featurizer_version,
    )
    return learner


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _label_fingerprint(project: Project) -> tuple[int, datetime | None]:
    """(non-skipped answers, latest edit): a count alone would miss an answer edited in place."""
    row = Annotation.objects.filter(project=project, skipped=False).aggregate(
        n=Count("id"), last=Max("updated_at")
    )
    return row["n"], row["last"]


def _edited_since(training: ProjectTraining, last_edit: datetime | None) -> bool:
    """True when the latest answer edit is not the one the current model was trained with."""
    version = training.current_version
    trained_on = (version.metrics or {}).get("last_label_at") if version else None
    return last_edit is not None and trained_on != last_edit.isoformat()


def _train(
    project: Project,
    training: ProjectTraining,
    fingerprint: tuple[int, datetime | None],
    now: datetime,
) -> ModelVersion:
    """Fit on every label, save the file atomically, re-rank the queue, record the version."""
    count, last_edit = fingerprint
    started = time.perf_counter()
    classes = list(project.label_classes.order_by("order", "id").values_list("name", flat=True))
    featurizer = featurizer_for(project.item_kind)
    items, labels = _majority_labels(project, classes)
    X, kept = _featurize(featurizer, project, items)
    learner = IncrementalLearner(
        classes, multi_label=project.is_multi_label, n_features=featurizer.n_features
    )
    learner.fit(X, [labels[i] for i in kept])
    accuracy = learner.estimated_accuracy()
    train_ms = _ms_since(started)

    version = (project.model_versions.aggregate(v=Max("version"))["v"] or 0) + 1
    artifact = Path(f"project-{project.pk}") / f"v{version}.dpmodel"
    balance = {name: int(n) for name, n in zip(classes, learner.label_counts, strict=True)}
    metrics = {
        "labels_used": int(learner.n_labels),
        "class_balance": balance,
        "estimated_accuracy": accuracy,
        "annotations_counted": count,
        "last_label_at": last_edit.isoformat() if last_edit else None,
        "train_ms": train_ms,
        "cold": learner.is_cold(),
    }
    path = models_dir() / artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.save_learner(
        learner,
        path,
        featurizer_name=featurizer.name,
        featurizer_version=featurizer.version,
        metrics=metrics,
    )
    metrics["rescored"] = _rescore(project, training, learner, featurizer)
    metrics["duration_ms"] = _ms_since(started)

    model = ModelVersion.objects.create(
        project=project,
        version=version,
        artifact=artifact.as_posix(),
        featurizer_name=featurizer.name,
        featurizer_version=featurizer.version,
        labels_used=learner.n_labels,
        class_balance=balance,
        estimated_accuracy=accuracy,
        metrics=metrics,
        strategy=training.strategy,
        trained_at=now,
        duration_ms=metrics["duration_ms"],
    )
    training.current_version = model
    training.labels_seen = count
    training.trained_at = now
    training.save(update_fields=["current_version", "labels_seen", "trained_at"])
    return model


def _ms_since(started: float) -> int:
    return int(round((time.perf_counter() - started) * 1000))


def _majority_labels(
    project: Project, classes: Sequence[str]
) -> tuple[list[int], dict[int, Label]]:
    """One training label per item from its non-skipped answers (items in id order).

    With overlap > 1 annotators disagree; training on every answer would weight an item by its
    overlap, so each item contributes its majority instead. Single-label: the most common class,
    ties to the class listed first in the project. Multi-label: each class more than half of the
    item's answers chose. Names no longer in the schema are ignored.
    """
    rank = {name: i for i, name in enumerate(classes)}
    answers: dict[int, list[list[str]]] = {}
    rows = (
        Annotation.objects.filter(project=project, skipped=False)
        .order_by("item_id", "id")
        .values_list("item_id", "labels")
    )
    for item_id, names in rows.iterator(chunk_size=2000):
        answers.setdefault(item_id, []).append([n for n in names if n in rank])
    labels: dict[int, Label] = {}
    for item_id, given in answers.items():
        votes = Counter(name for names in given for name in dict.fromkeys(names))
        if project.is_multi_label:
            labels[item_id] = [n for n in classes if 2 * votes[n] > len(given)]
        elif votes:
            labels[item_id] = min(votes, key=lambda n: (-votes[n], rank[n]))
    return list(labels), labels


def _featurize(
    featurizer: Featurizer, project: Project, item_ids: Sequence[int]
) -> tuple[np.ndarray | sp.csr_matrix, list[int]]:
    """Feature rows for the items, in order, and the ids kept (undecodable images are dropped)."""
    blocks, kept = [], []
    for start in range(0, len(item_ids), _CHUNK):
        chunk = list(item_ids[start : start + _CHUNK])
        by_id = {i.pk: i for i in Item.objects.filter(pk__in=chunk).only("id", "text", "image")}
        X, ok = _featurize_items(featurizer, project, [by_id[i] for i in chunk if i in by_id])
        blocks.append(X)
        kept.extend(ok)
    if not blocks:
        return _empty(featurizer), []
    if sp.issparse(blocks[0]):
        return sp.vstack(blocks, format="csr"), kept
    return np.vstack(blocks), kept


def _empty(featurizer: Featurizer) -> np.ndarray:
    return np.zeros((0, featurizer.n_features), dtype=np.float32)


def _featurize_items(
    featurizer: Featurizer, project: Project, items: Iterable[Item]
) -> tuple[np.ndarray | sp.csr_matrix, list[int]]:
    items = list(items)
    if project.item_kind != Project.ItemKind.IMAGE:
        return featurizer.transform([i.text for i in items]), [i.pk for i in items]
    rows, kept = [], []
    for item in items:
        try:
            with item.image.open("rb") as handle:
                rows.append(featurizer.transform([handle.read()]))
        except (OSError, ValueError) as exc:
            # One unreadable file must not stop the project's model; the item stays unscored.
            logger.warning("item %s: no features: %s", item.pk, exc)
            continue
        kept.append(item.pk)
    return (np.vstack(rows) if rows else _empty(featurizer)), kept


# --------------------------------------------------------------------------------------------
# Rescoring the queue
# --------------------------------------------------------------------------------------------


def _rescore(
    project: Project,
    training: ProjectTraining,
    learner: IncrementalLearner,
    featurizer: Featurizer,
) -> int:
    """Write `1 + score` as the priority of up to RESCORE_CANDIDATES open items; return how many.

    Scored items sit above never-scored ones (random priorities in [0, 1)), so the queue serves
    the most uncertain candidates first. While the model is cold its ranking is noise, so the
    random order (the diverse cold-start sample) is kept. An `exploration` share of candidates
    gets a random score in the scored range instead, so some served items are not chosen by the
    model's own idea of its blind spots.
    """
    if learner.is_cold():
        return 0
    ids = _candidate_ids(project, RESCORE_CANDIDATES)
    X, kept = _featurize(featurizer, project, ids)
    if not kept:
        return 0
    proba = learner.predict_proba(X)
    rng = np.random.default_rng()
    scores = get_strategy(training.strategy)(proba, multi_label=learner.multi_label, rng=rng)
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    explore = rng.random(len(kept)) < training.exploration
    if explore.any():
        scores[explore] = rng.uniform(0.0, max(float(scores.max()), 1e-9), int(explore.sum()))
    Item.objects.bulk_update(
        [Item(pk=pk, priority=1.0 + float(s)) for pk, s in zip(kept, scores, strict=True)],
        ["priority"],
        batch_size=500,
    )
    return len(kept)


def _candidate_ids(project: Project, limit: int) -> list[int]:
    """Half the current head of the queue (keep what is served fresh), half a random slice.

    `order_by("?")` sorts the whole table; a slice of consecutive ids from a random start is
    one index range scan and, since ids are spread over the file order, still varied.
    """
    open_items = Item.objects.filter(project=project, needs_annotation=True)
    head = list(open_items.order_by("-priority", "id").values_list("id", flat=True)[: limit // 2])
    lo = open_items.order_by("id").values_list("id", flat=True).first()
    hi = open_items.order_by("-id").values_list("id", flat=True).first()
    if lo is None:
        return []
    pivot = int(np.random.default_rng().integers(lo, hi + 1))
    taken = set(head)
    wanted = limit - len(head)
    ids = head
    for window in (open_items.filter(id__gte=pivot), open_items.filter(id__lt=pivot)):
        if wanted <= 0:
            break
        fresh = [
            i
            for i in window.order_by("id").values_list("id", flat=True)[: wanted + len(taken)]
            if i not in taken
        ][:wanted]
        ids.extend(fresh)
        taken.update(fresh)
        wanted -= len(fresh)
    return ids
