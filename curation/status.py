"""What the annotate page shows about a project's model: the "model.updated" event and the
panel's first rendering. Read from the current version's row and metrics only, so the web
processes that render it never load the training machinery (`curation.trainer`)."""

from __future__ import annotations

from typing import Any

from annotations.models import GoldLabel, Project
from curation.accuracy import eval_summary
from curation.models import ModelVersion, ProjectTraining

__all__ = ["announcement", "model_status"]


def model_status(project: Project) -> dict[str, Any]:
    """What the annotate page shows about the model before the websocket says more."""
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    version = training.current_version if training else None
    answered = GoldLabel.objects.filter(project=project, labels__isnull=False).count()
    if version is None:
        return {
            "version": None,
            "labels_used": 0,
            "since": answered,
            "cold": True,
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
    """The "model.updated" event: everything the annotate page shows about the model."""
    metrics = version.metrics or {}
    return {
        "type": "model.updated",
        "project_id": project.pk,
        "version": version.version,
        "labels_used": version.labels_used,
        "estimated_accuracy": version.estimated_accuracy,
        "cold": bool(metrics.get("cold", False)),
        # Evaluation items are scored only by training runs, so the version's copy is current.
        "eval": metrics.get("eval") or eval_summary(project),
        "strategy": version.strategy,
        "suggestions": training.suggestions,
        "trained_at": version.trained_at.isoformat(),
    }
