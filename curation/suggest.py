"""The model's guess for the items an annotator is about to see.

Each server process keeps the current model of each project it has served, reloaded from its
file when the project's version changes (one small query per page of cards tells). Items of the
evaluation slice get no suggestion: showing the model's guess could anchor the annotator and
inflate the very accuracy the slice is there to measure honestly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from annotations.models import Item, Project
from curation import artifacts
from curation.features import item_features
from curation.featurizers import featurizer_for
from curation.learner import IncrementalLearner
from curation.models import EvalSample, ProjectTraining, Suggestions

logger = logging.getLogger(__name__)

__all__ = ["predictions_for", "suggestions_for"]

_models: dict[int, tuple[int, IncrementalLearner]] = {}
_lock = threading.Lock()


def suggestions_for(project: Project, items: Sequence[Item]) -> tuple[str, dict[int, dict]]:
    """(mode, {item id: {"labels": [...], "p": probability}}) for the items, by the current
    model; no suggestions while the mode is off, there is no model yet or it is still cold."""
    row = (
        ProjectTraining.objects.filter(project=project)
        .values("suggestions", "current_version__version", "current_version__metrics")
        .first()
    )
    if not row or not items:
        return (row or {}).get("suggestions", Suggestions.HIGHLIGHT), {}
    mode, number = row["suggestions"], row["current_version__version"]
    cold = (row["current_version__metrics"] or {}).get("cold", True)
    if mode == Suggestions.OFF or number is None or cold:
        return mode, {}
    learner = _learner(project, number)
    if learner is None:
        return mode, {}
    held_out = set(
        EvalSample.objects.filter(item_id__in=[i.pk for i in items], resolved_at=None).values_list(
            "item_id", flat=True
        )
    )
    wanted = [i.pk for i in items if i.pk not in held_out]
    return mode, _predict(project, learner, wanted)


def predictions_for(project: Project, items: Sequence[Item]) -> dict[int, dict]:
    """The current model's prediction for each item, whatever the suggestion mode, with every
    class's probability (`proba`), for reviewers. Empty while there is no model or it is cold."""
    row = (
        ProjectTraining.objects.filter(project=project)
        .values("current_version__version", "current_version__metrics")
        .first()
    )
    if not row or not items or row["current_version__version"] is None:
        return {}
    if (row["current_version__metrics"] or {}).get("cold", True):
        return {}
    learner = _learner(project, row["current_version__version"])
    if learner is None:
        return {}
    return _predict(project, learner, [i.pk for i in items], with_proba=True)


def _predict(
    project: Project, learner: IncrementalLearner, ids: list[int], *, with_proba: bool = False
) -> dict[int, dict[str, Any]]:
    X, kept = item_features(project, featurizer_for(project.item_kind), ids)
    if not kept:
        return {}
    proba = learner.predict_proba(X)
    out: dict[int, dict[str, Any]] = {}
    for row_index, item_id in enumerate(kept):
        p = proba[row_index]
        if learner.multi_label:
            labels = [c for c, q in zip(learner.classes, p, strict=True) if q >= 0.5]
            confidence = min((float(q) if q >= 0.5 else 1 - float(q)) for q in p)
        else:
            labels = [learner.classes[int(p.argmax())]]
            confidence = float(p.max())
        out[item_id] = {"labels": labels, "p": round(confidence, 3)}
        if with_proba:
            out[item_id]["proba"] = {
                c: round(float(q), 3) for c, q in zip(learner.classes, p, strict=True)
            }
    return out


def _learner(project: Project, number: int) -> IncrementalLearner | None:
    with _lock:
        cached = _models.get(project.pk)
    if cached and cached[0] == number:
        return cached[1]
    version = project.model_versions.filter(version=number).first()
    if version is None:
        return None
    try:
        learner, _ = artifacts.read_model_file(
            version.path,
            featurizer_name=version.featurizer_name,
            featurizer_version=version.featurizer_version,
        )
    except (OSError, artifacts.ModelFileError):
        # Pruned or damaged file: no suggestion is better than a wrong one.
        logger.warning("no suggestions for %s: model v%s unreadable", project, number)
        return None
    with _lock:
        _models[project.pk] = (number, learner)
    return learner
