"""Training entry points for the admin, commands and tests; the worker calls `curation.trainer`.

`train_project_once` runs the same code as the training worker, synchronously, so "Train now"
in the admin and `manage.py train` give exactly what the loop gives.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.db.models import Count, Max, Q, TextField
from django.db.models.functions import Cast

from annotations.gold import INCOMPLETE
from annotations.models import Annotation, GoldLabel, GoldSource, Project, Review
from curation.models import AnalysisRun, ModelVersion, ProjectTraining

# The numerical modules are imported by the functions that use them: the web processes import
# this module for `is_stale` and the reports, and should not load scikit-learn, SciPy and
# statsmodels until a page needs them (a fresh server process is ~140 MB smaller without).
if TYPE_CHECKING:
    from curation import agreement
    from curation.learner import IncrementalLearner

__all__ = [
    "agreement_report",
    "annotator_quality",
    "current_model",
    "is_stale",
    "quality_report",
    "stale_projects",
    "trained_projects",
    "train_project_once",
]


def train_project_once(project: Project) -> ModelVersion | None:
    """Retrain `project` on all its labels and re-rank its queue; None if nothing changed."""
    from curation import trainer

    result = trainer.train(project.pk)
    return result.version if result else None


def current_model(project: Project) -> IncrementalLearner | None:
    """The project's current learner, loaded from its file (checksum and feature space checked).

    Raises `artifacts.ModelFileError` for a corrupt or tampered file rather than ranking with it.
    """
    from curation import artifacts

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


def trained_projects() -> list[int]:
    """Projects that have a model, in id order."""
    return list(
        ProjectTraining.objects.filter(current_version__isnull=False)
        .order_by("project_id")
        .values_list("project_id", flat=True)
    )


def analysed_projects() -> list[int]:
    """Projects with an analysis queued or running (running ones may have lost their worker)."""
    return list(
        AnalysisRun.objects.filter(status__in=["queued", "running"])
        .order_by("project_id")
        .values_list("project_id", flat=True)
        .distinct()
    )


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
    return _agreement(project, project.class_names(), _answer_rows(project))


def _answer_rows(project: Project) -> list[tuple[int, str, list[str]]]:
    """The project's non-skipped answers as (item id, annotator's username, labels).

    The labels are read as JSON text and each distinct text decoded once (a project has few
    distinct answers): Django's per-row JSON decoding was 0.8 s of the 1 s budget at 100k
    answers. Rows with the same answer share one list; do not change it.
    """
    rows = list(
        Annotation.objects.filter(project=project, skipped=False).values_list(
            "item_id", "annotator_id", Cast("labels", output_field=TextField())
        )
    )
    User = get_user_model()
    names = dict(
        User.objects.filter(pk__in={who for _, who, _ in rows}).values_list(
            "pk", User.USERNAME_FIELD
        )
    )
    decoded = {text: json.loads(text) for text in {text for _, _, text in rows}}
    return [(item_id, names[who], decoded[text]) for item_id, who, text in rows]


def _agreement(project: Project, classes: list[str], rows: list) -> dict:
    from curation import agreement

    known = set(classes)
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
    from curation import agreement

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


def annotator_quality(project: Project) -> list[dict]:
    """Each annotator's accuracy against adjudicated gold labels and leave-one-out agreement
    with the others (`curation.quality`), flagged below `project.quality_threshold`."""
    return _annotator_quality(project, project.class_names(), _answer_rows(project))


def _annotator_quality(project: Project, classes: list[str], rows: list) -> list[dict]:
    from curation import quality

    multi = project.is_multi_label
    answers = quality.encode_answers(rows, classes, multi_label=multi)
    adjudicated = GoldLabel.objects.filter(
        project=project, source=GoldSource.ADJUDICATED
    ).values_list("item_id", "labels")
    scores = quality.score_annotators(answers, adjudicated, multi_label=multi)
    return quality.annotator_table(scores, threshold=project.quality_threshold)


def quality_report(project: Project) -> dict:
    """What the quality page and API show: `agreement_report`, the annotator table, who is below
    the threshold, gold labels by source ("incomplete" for items still waiting for answers) and
    reviews by status (every key present, 0 if none)."""
    from curation import quality

    classes, rows = project.class_names(), _answer_rows(project)  # read once for both
    annotators = _annotator_quality(project, classes, rows)
    # order_by(): the models' default orderings would split the groups. Items still waiting
    # for answers are counted apart (a reviewer's decision excepted): one answer would
    # otherwise count as "unanimous", as the export marks them too.
    waiting = Q(item__needs_annotation=True) & ~Q(source=GoldSource.ADJUDICATED)
    by_source = dict(
        GoldLabel.objects.filter(project=project)
        .exclude(waiting)
        .order_by()
        .values("source")
        .annotate(n=Count("pk"))
        .values_list("source", "n")
    )
    incomplete = GoldLabel.objects.filter(waiting, project=project).count()
    by_status = dict(
        Review.objects.filter(project=project)
        .order_by()
        .values("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    return {
        "threshold": project.quality_threshold,
        "min_items": quality.MIN_ITEMS,
        "agreement": _agreement(project, classes, rows),
        "annotators": annotators,
        "below_threshold": [row["annotator"] for row in annotators if row["below_threshold"]],
        "gold": {source.value: by_source.get(source.value, 0) for source in GoldSource}
        | {INCOMPLETE: incomplete},
        "reviews": {status.value: by_status.get(status.value, 0) for status in Review.Status},
    }
