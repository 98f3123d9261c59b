"""The model's guess for the items an annotator is about to see.

The training worker stores the guess on each item it ranks (`Item.suggestion`, by
`curation.ranking_write`, in the statement that writes the ranking), so the annotate page reads
it from the rows the queue already loaded: no features, no model and no scikit-learn in a web
request. Items of the evaluation slice get none (the worker writes none for them): showing the
model's guess could anchor the annotator and inflate the very accuracy the slice is there to
measure honestly.

The reviewer page wants every class's probability, which is not stored: `predictions_for` loads
the current model, importing the numerical libraries only when first called.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from annotations.models import Item, Project
from curation.models import ProjectTraining, Suggestions

if TYPE_CHECKING:
    from curation.learner import IncrementalLearner

logger = logging.getLogger(__name__)

__all__ = [
    "SUGGESTION_MAX_AGE",
    "Suggestion",
    "item_suggestion",
    "predictions_for",
    "suggestions_for",
]

#: A stored guess made this many versions before the current model, or more, is not shown: the
#: head of the queue is rewritten by every run, so only items that left it carry old guesses.
SUGGESTION_MAX_AGE = 5

_models: dict[int, tuple[int, IncrementalLearner]] = {}
_lock = threading.Lock()


class Suggestion(TypedDict):
    labels: list[str]
    # How sure the model is: the top class's probability (multi-label: its least sure class's).
    p: float


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
    """(mode, {item id: suggestion}) for the items, from the guesses stored on them; none while
    the mode is off, there is no model yet or it is still cold (the version's `cold` flag), and
    none for an item without a guess from one of the last SUGGESTION_MAX_AGE versions."""
    row = (
        ProjectTraining.objects.filter(project=project)
        .values("suggestions", "current_version__version", "current_version__metrics__cold")
        .first()
    )
    if not row or not items:
        return (row or {}).get("suggestions", Suggestions.HIGHLIGHT), {}
    mode, number = row["suggestions"], row["current_version__version"]
    if mode == Suggestions.OFF or number is None or _cold(row):
        return mode, {}
    oldest = number - SUGGESTION_MAX_AGE
    return mode, {
        i.pk: i.suggestion
        for i in items
        if i.suggestion and i.suggestion_version is not None and i.suggestion_version > oldest
    }


def predictions_for(project: Project, items: Sequence[Item]) -> dict[int, dict[str, Any]]:
    """The current model's prediction for each item, whatever the suggestion mode, with every
    class's probability (`proba`), for reviewers. Empty while there is no model or it is cold."""
    row = (
        ProjectTraining.objects.filter(project=project)
        .values("current_version__version", "current_version__metrics__cold")
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
    from curation.featurizers import featurizer_for

    X, kept = item_features(project, featurizer_for(project.item_kind), [i.pk for i in items])
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
