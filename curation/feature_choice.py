"""Which features a project with item vectors trains on, by measured accuracy.

A team's embeddings are often much better than hashed n-grams or pixels, and sometimes worse
(an embedding made for another task). So the learner is cross-validated on the gold labels so
far with each feature set (`curation.vector_features`: built-in, vectors, both) whenever the
accuracy estimate runs (`curation.jobs`: from 10 labels, again each time they grew by half), and
the project trains on the best one from its next label. The scores and the choice are recorded on
the model version measured (`metrics["feature_cv"]`, `metrics["feature_set"]`). A tie keeps the
set in use, so the choice does not flap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from annotations.models import GoldLabel, Project
from curation.features import item_features
from curation.learner import IncrementalLearner
from curation.models import ProjectTraining
from curation.vector_features import FEATURE_SETS, project_feature_set, project_featurizer

__all__ = ["feature_set_choose", "feature_sets_measure", "feature_set_update"]


def feature_sets_measure(
    project: Project, *, between_folds: Callable[[], None] | None = None
) -> dict[str, float | None]:
    """Cross-validated accuracy (multi-label: micro-F1) of the learner on the gold labels so
    far with each feature set; None where there are too few labels to tell."""
    classes = project.class_names()
    rank = set(classes)
    gold = [
        (item_id, [n for n in labels if n in rank])
        for item_id, labels in GoldLabel.objects.filter(
            project=project, labels__isnull=False
        ).values_list("item_id", "labels")
    ]
    if not project.is_multi_label:
        gold = [(i, names[0]) for i, names in gold if names]
    gold.sort()
    ids = [i for i, _ in gold]
    labels = dict(gold)
    scores: dict[str, float | None] = {}
    for name in FEATURE_SETS:
        featurizer = project_featurizer(project, name)
        X, kept = item_features(project, featurizer, ids)
        learner = IncrementalLearner(
            list(classes), multi_label=project.is_multi_label, n_features=featurizer.n_features
        )
        if not kept:
            scores[name] = None
            continue
        learner.fit(X, [labels[i] for i in kept])
        scores[name] = learner.estimated_accuracy(between_folds=between_folds)
    return scores


def feature_set_choose(scores: Mapping[str, float | None], current: str) -> str:
    """The best measured set; the current one on a tie or when nothing was measured."""
    measured = {k: v for k, v in scores.items() if v is not None}
    if not measured:
        return current
    best = max(measured.values())
    if measured.get(current) == best:
        return current
    return next(k for k in FEATURE_SETS if measured.get(k) == best)


def feature_set_update(
    project: Project, *, between_folds: Callable[[], None] | None = None
) -> dict[str, Any] | None:
    """Measure and store the project's feature set; None for a project without vectors. Returns
    what to record on the model version: the scores, the set chosen, the set it replaced."""
    if project.vector_dim is None:
        return None
    current = project_feature_set(project)
    scores = feature_sets_measure(project, between_folds=between_folds)
    chosen = feature_set_choose(scores, current)
    changes: dict[str, Any] = {"feature_set": chosen}
    if chosen != current:
        changes["labels_until"] = None  # the next run retrains on the new features at once
    ProjectTraining.objects.filter(project=project).update(**changes)
    rounded = {k: (None if v is None else round(v, 4)) for k, v in scores.items()}
    return {"feature_cv": rounded, "feature_set": chosen, "feature_set_before": current}
