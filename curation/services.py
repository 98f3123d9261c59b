"""Training entry points for the admin, commands and tests; the worker calls `curation.trainer`.

`train_project_once` runs the same code as the training worker, synchronously, so "Train now"
in the admin and `manage.py train` give exactly what the loop gives.
"""

from __future__ import annotations

from django.db.models import Max

from annotations.models import Annotation, GoldLabel, Project
from curation import agreement, artifacts, trainer
from curation.learner import IncrementalLearner
from curation.models import ModelVersion, ProjectTraining

__all__ = [
    "agreement_report",
    "current_model",
    "is_stale",
    "stale_projects",
    "train_project_once",
]


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
    """Projects with gold labels their current model has not seen: lost events, a worker that
    was down, labels written while Redis was away. One index lookup (gold_changed_idx) per
    project."""
    trained = dict(ProjectTraining.objects.values_list("project_id", "labels_until"))
    stale = []
    for pid in Project.objects.order_by("id").values_list("id", flat=True):
        last = GoldLabel.objects.filter(project_id=pid).aggregate(m=Max("updated_at"))["m"]
        if last is not None and (trained.get(pid) is None or last > trained[pid]):
            stale.append(pid)
    return stale


def is_stale(project: Project) -> bool:
    """True when the project has a gold label change its current model has not seen."""
    last = GoldLabel.objects.filter(project=project).aggregate(m=Max("updated_at"))["m"]
    if last is None:
        return False
    seen = (
        ProjectTraining.objects.filter(project=project)
        .values_list("labels_until", flat=True)
        .first()
    )
    return seen is None or last > seen


def agreement_report(project: Project) -> dict:
    """The project's inter-annotator agreement, from its non-skipped answers.

    Single-label projects are measured over the class each answer chose; multi-label projects
    per class (each class a yes/no question), the numbers keyed by class. Answers naming a class
    that is no longer in the project's schema are left out. Undefined coefficients are None.
    """
    classes = list(project.label_classes.order_by("order", "id").values_list("name", flat=True))
    known = set(classes)
    rows = Annotation.objects.filter(project=project, skipped=False).values_list(
        "item_id", "annotator__username", "labels"
    )
    if project.is_multi_label:
        answers = [(i, who, [n for n in names if n in known]) for i, who, names in rows]
        return {
            "annotations": len(answers),
            "per_class": {
                name: _coefficients(ratings)
                for name, ratings in agreement.per_class(answers, classes).items()
            },
        }
    answers = [(i, who, names[0]) for i, who, names in rows if names and names[0] in known]
    ratings = agreement.Ratings.from_answers(answers, classes)
    return {"annotations": len(answers), **_coefficients(ratings)}


def _coefficients(ratings: agreement.Ratings) -> dict:
    fleiss, fleiss_items = agreement.fleiss_kappa(ratings)
    return {
        "items": len(ratings.items),
        "annotators": list(ratings.annotators),
        "classes": list(ratings.classes),
        "percent_agreement": agreement.percent_agreement(ratings),
        "fleiss_kappa": fleiss,
        "fleiss_items": fleiss_items,
        "krippendorff_alpha": agreement.krippendorff_alpha(ratings),
        "cohen_kappa": [
            {"annotators": [a, b], "kappa": kappa, "shared_items": shared}
            for (a, b), (kappa, shared) in agreement.pairwise_cohen_kappa(ratings).items()
        ],
        "confusion": agreement.annotator_confusion(ratings).tolist(),
    }
