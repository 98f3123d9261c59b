"""Training entry points for the admin, commands and tests; the worker calls `curation.trainer`.

`train_project_once` runs the same code as the training worker, synchronously, so "Train now"
in the admin and `manage.py train` give exactly what the loop gives.
"""

from __future__ import annotations

from django.db.models import Max

from annotations.models import Annotation, Project
from curation import artifacts, trainer
from curation.learner import IncrementalLearner
from curation.models import ModelVersion, ProjectTraining

__all__ = ["current_model", "is_stale", "stale_projects", "train_project_once"]


def train_project_once(project: Project) -> ModelVersion | None:
    """Retrain `project` on all its labels and re-rank its queue; None if nothing changed."""
    result = trainer.train(project.pk)
    return result.version if result else None


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


def stale_projects() -> list[int]:
    """Projects with answers their current model has not seen: lost events, a worker that was
    down, labels written while Redis was away. One index lookup (annotation_changed_idx) per
    project."""
    trained = dict(ProjectTraining.objects.values_list("project_id", "labels_until"))
    stale = []
    for pid in Project.objects.order_by("id").values_list("id", flat=True):
        last = Annotation.objects.filter(project_id=pid).aggregate(m=Max("updated_at"))["m"]
        if last is not None and (trained.get(pid) is None or last > trained[pid]):
            stale.append(pid)
    return stale


def is_stale(project: Project) -> bool:
    """True when the project has an answer change its current model has not seen."""
    last = Annotation.objects.filter(project=project).aggregate(m=Max("updated_at"))["m"]
    if last is None:
        return False
    seen = (
        ProjectTraining.objects.filter(project=project)
        .values_list("labels_until", flat=True)
        .first()
    )
    return seen is None or last > seen
