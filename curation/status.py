"""What the annotate page shows about a project's model: the "model.updated" event and the
panel's first rendering. Read from the current version's row and metrics only, so the web
processes that render it never load the training machinery (`curation.trainer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotations.models import GoldLabel, Project
from curation.accuracy import eval_summary
from curation.models import ModelVersion, ProjectTraining
from curation.strategy_names import DEFAULT_MIN_PER_CLASS

__all__ = ["announcement", "class_needs", "model_status"]


def class_needs(classes: Sequence[str], counts: Sequence[int]) -> list[dict[str, Any]]:
    """The classes with fewer than DEFAULT_MIN_PER_CLASS labels (multi-label: positives), in
    the project's order, each as {"name", "labels", "wanted"}: what the page asks for. A list,
    not a mapping: PostgreSQL's jsonb does not keep the keys of an object in order."""
    return [
        {"name": name, "labels": int(n), "wanted": DEFAULT_MIN_PER_CLASS}
        for name, n in zip(classes, counts, strict=True)
        if n < DEFAULT_MIN_PER_CLASS
    ]


def model_status(project: Project) -> dict[str, Any]:
    """What the annotate page shows about the model before the websocket says more."""
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    version = training.current_version if training else None
    answered = GoldLabel.objects.filter(project=project, labels__isnull=False).count()
    if version is None:
        classes = project.class_names()
        return {
            "version": None,
            "labels_used": 0,
            "since": answered,
            "cold": True,
            "ranking": False,
            "needs": class_needs(classes, [0] * len(classes)),
            "estimated_accuracy": None,
            "eval": eval_summary(project),
            "suggestions": training.suggestions if training else "highlight",
        }
    return announcement(project, training, version) | {
        "since": max(0, answered - (training.labels_seen or 0))
    }


def announcement(
    project: Project, training: ProjectTraining, version: ModelVersion
) -> dict[str, Any]:
    """The "model.updated" event: everything the annotate page shows about the model.

    `cold`: some class has no label yet, so the page shows no suggestion (`curation.suggest`);
    `ranking`: the model ranks the queue (two classes have labels); `ranked_by`: "endpoint"
    while the project's prediction endpoint ranks it instead; `needs`: `class_needs`.
    Versions saved before `ranking` and `needs` existed were cold until 3 labels a class.
    """
    metrics = version.metrics or {}
    cold = bool(metrics.get("cold", False))
    return {
        "type": "model.updated",
        "project_id": project.pk,
        "version": version.version,
        "labels_used": version.labels_used,
        "estimated_accuracy": version.estimated_accuracy,
        "cold": cold,
        "ranking": bool(metrics.get("ranking", not cold)),
        "ranked_by": metrics.get("ranked_by", "model"),
        "needs": metrics.get("needs", []),
        # Evaluation items are scored only by training runs, so the version's copy is current.
        "eval": metrics.get("eval") or eval_summary(project),
        "strategy": version.strategy,
        "suggestions": training.suggestions,
        "trained_at": version.trained_at.isoformat(),
    }
