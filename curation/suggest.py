"""The model's guess for the items an annotator is about to see.

The training worker stores the guess on each item it ranks (`Item.suggestion`, by
`curation.ranking_write`, in the statement that writes the ranking), so the annotate page reads
it from the rows the queue already loaded: no features, no model and no scikit-learn in a web
request. Items of the evaluation slice get none (the worker writes none for them): showing the
model's guess could anchor the annotator and inflate the very accuracy the slice is there to
measure honestly.

When our model has no guess for an item (it is cold, or never ranked the item), an imported
prediction (`annotations.PreAnnotation`, a team's own model) is shown instead, named by its
model; the project's `suggestion_source` can put the imported one first, or leave it out.
Evaluation items get neither.

The reviewer page wants every class's probability, which is not stored: `predictions_for` loads
the current model, importing the numerical libraries only when first called.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from django.db import connection

from annotations.models import Item, PreAnnotation, Project
from curation.models import (
    EvalSample,
    ModelVersion,
    ProjectTraining,
    Suggestions,
    SuggestionSource,
)

if TYPE_CHECKING:
    from curation.learner import IncrementalLearner

logger = logging.getLogger(__name__)

__all__ = [
    "SUGGESTION_MAX_AGE",
    "Suggestion",
    "imported_suggestions",
    "item_suggestion",
    "predictions_for",
    "suggestions_for",
]

#: A stored guess made this many versions before the current model, or more, is not shown: the
#: head of the queue is rewritten by every run, so only items that left it carry old guesses.
SUGGESTION_MAX_AGE = 5

_models: dict[int, tuple[int, IncrementalLearner]] = {}
_lock = threading.Lock()


class _SuggestionBase(TypedDict):
    labels: list[str]
    # How sure the model is: the top class's probability (multi-label: its least sure class's).
    # None for an imported prediction that gave no score.
    p: float | None


class Suggestion(_SuggestionBase, total=False):
    # Set on an imported prediction: the name of the team's model that made it.
    model: str


def item_suggestion(
    classes: Sequence[str], proba: Iterable[float], *, multi_label: bool
) -> Suggestion:
    """The guess shown for one item from its class probabilities: single-label, the top class;
    multi-label, the classes at 0.5 or more, as sure as its least sure class."""
    p = [float(q) for q in proba]
    if multi_label:
        labels = [c for c, q in zip(classes, p, strict=True) if q >= 0.5]
        confidence = min((q if q >= 0.5 else 1 - q) for q in p)
    else:
        top = max(range(len(p)), key=p.__getitem__)
        labels, confidence = [classes[top]], p[top]
    return {"labels": labels, "p": round(confidence, 3)}


def suggestions_for(project: Project, items: Sequence[Item]) -> tuple[str, dict[int, Suggestion]]:
    """(mode, {item id: suggestion}) for the items: our model's guess stored on them, unless the
    mode is off, there is no model yet, it is still cold (the version's `cold` flag) or the guess
    is older than SUGGESTION_MAX_AGE versions; where there is none, an imported prediction
    (or the imported one first, per `suggestion_source`). Never for an evaluation item."""
    row = _training_row(project.pk)
    mode = (row or {}).get("suggestions", Suggestions.HIGHLIGHT)
    source = (row or {}).get("suggestion_source", SuggestionSource.MODEL)
    if not items or mode == Suggestions.OFF:
        return mode, {}
    own: dict[int, Suggestion] = {}
    number = row["current_version__version"] if row else None
    if number is not None and not _cold(row):
        oldest = number - SUGGESTION_MAX_AGE
        own = {
            i.pk: i.suggestion
            for i in items
            if i.suggestion and i.suggestion_version is not None and i.suggestion_version > oldest
        }
    if row is None or source == SuggestionSource.MODEL_ONLY or not row["has_imports"]:
        # No training row: no predictions either (storing them makes the row).
        return mode, own
    wanted = [i.pk for i in items if source == SuggestionSource.PREDICTIONS or i.pk not in own]
    imported = imported_suggestions(wanted)
    if source == SuggestionSource.PREDICTIONS:
        return mode, {**own, **imported}
    return mode, {**imported, **own}


def imported_suggestions(item_ids: Sequence[int]) -> dict[int, Suggestion]:
    """The latest imported prediction of each of `item_ids` as a suggestion, named by its model;
    none for open evaluation items (the worker writes none of our own for them either)."""
    if not item_ids:
        return {}
    rows = (
        PreAnnotation.objects.filter(item_id__in=item_ids)
        .order_by("item_id", "-updated_at", "model_name")
        .values_list("item_id", "model_name", "labels", "scores", "score")
    )
    found: dict[int, Suggestion] = {}
    for item_id, model, labels, scores, score in rows:
        if item_id not in found:
            found[item_id] = {
                "labels": labels,
                "p": _sureness(labels, scores, score),
                "model": model,
            }
    if found:
        held_out = EvalSample.objects.filter(item_id__in=list(found), resolved_at__isnull=True)
        for item_id in held_out.values_list("item_id", flat=True):
            found.pop(item_id, None)
    return found


def _sureness(
    labels: list[str], scores: dict[str, float] | None, score: float | None
) -> float | None:
    """How sure an imported prediction is: its score, else its least sure label's probability."""
    if score is not None:
        return round(score, 3)
    if scores and labels and all(name in scores for name in labels):
        return round(min(scores[name] for name in labels), 3)
    return None


def predictions_for(project: Project, items: Sequence[Item]) -> dict[int, dict[str, Any]]:
    """The current model's prediction for each item, whatever the suggestion mode, with every
    class's probability (`proba`), for reviewers. Empty while there is no model or it is cold."""
    row = (
        ProjectTraining.objects.filter(project=project)
        .values(
            "current_version__version",
            "current_version__metrics__cold",
            "current_version__featurizer_name",
        )
        .first()
    )
    if not row or not items or row["current_version__version"] is None:
        return {}
    if _cold(row):
        return {}
    learner = _learner(project, row["current_version__version"])
    if learner is None:
        return {}
    # Here, not at the top: a web process that never serves a reviewer page never loads them.
    from curation.features import item_features
    from curation.vector_features import featurizer_named

    featurizer = featurizer_named(project, row["current_version__featurizer_name"])
    X, kept = item_features(project, featurizer, [i.pk for i in items])
    if not kept:
        return {}
    proba = learner.predict_proba(X)
    out: dict[int, dict[str, Any]] = {}
    for row_index, item_id in enumerate(kept):
        p = proba[row_index]
        out[item_id] = {
            **item_suggestion(learner.classes, p, multi_label=learner.multi_label),
            "proba": {c: round(float(q), 3) for c, q in zip(learner.classes, p, strict=True)},
        }
    return out


def _training_row(project_id: int) -> dict[str, Any] | None:
    """The project's suggestion settings, its current version's number and `cold` flag, and
    whether it has imported predictions at all (one probe of an index: a page without them
    pays no query for them). Plain SQL: it is read for every card handed out, and the ORM
    spent more building this join than the database running it."""
    training, version, imported = (
        connection.ops.quote_name(m._meta.db_table)
        for m in (ProjectTraining, ModelVersion, PreAnnotation)
    )
    # Whether the version is cold, a missing or null flag counting as cold (`_cold`).
    cold = (
        "COALESCE((v.metrics ->> 'cold')::boolean, TRUE)"
        if connection.vendor == "postgresql"
        else "COALESCE(json_extract(v.metrics, '$.cold'), 1)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.suggestions, t.suggestion_source, EXISTS (SELECT 1 FROM {imported} p "
            f"WHERE p.project_id = t.project_id), v.version, {cold} FROM {training} t "
            f"LEFT JOIN {version} v ON v.id = t.current_version_id WHERE t.project_id = %s",
            [project_id],
        )
        found = cursor.fetchone()
    if found is None:
        return None
    keys = (
        "suggestions",
        "suggestion_source",
        "has_imports",
        "current_version__version",
        "current_version__metrics__cold",
    )
    return dict(zip(keys, found, strict=True))


def _cold(row: dict[str, Any]) -> bool:
    """The current version's `cold` flag; a version without one counts as cold."""
    cold = row["current_version__metrics__cold"]
    return cold is None or bool(cold)


def _learner(project: Project, number: int) -> IncrementalLearner | None:
    with _lock:
        cached = _models.get(project.pk)
    if cached and cached[0] == number:
        return cached[1]
    version = project.model_versions.filter(version=number).first()
    if version is None:
        return None
    from curation import artifacts

    try:
        learner, _ = artifacts.read_model_file(
            version.path,
            featurizer_name=version.featurizer_name,
            featurizer_version=version.featurizer_version,
        )
    except (OSError, artifacts.ModelFileError):
        # Pruned or damaged file: no suggestion is better than a wrong one.
        logger.warning("no predictions for %s: model v%s unreadable", project, number)
        return None
    with _lock:
        _models[project.pk] = (number, learner)
    return learner
