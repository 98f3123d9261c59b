"""A project's model history: each run's new `ModelVersion` (`version_save`; what the page is
told about it is `curation.status`), and which rows and model files are kept.

The trainer saves a version after every label, so without pruning a project with 100,000
labels would carry 100,000 rows. After each run (`versions_prune`) a project keeps:

- the newest `MODEL_VERSIONS_KEPT` rows (setting, default 200): the recent history, label by
  label, which is what the admin's version list is read for;
- milestones: the first version at or past 1, 2, 5, 10, 20, 50, 100, … labels, so the learning
  curve (accuracy against labels) stays readable from the first model on, in a few rows per
  tenfold growth;
- the current version (`ProjectTraining.current_version`, normally the newest anyway).

Nothing else points at an older row: `EvalSample.predicted_by` keeps the number of the version
that made a prediction, not a reference, and suggestions are stored on the items with their
version number. Model files
are fewer still: the newest `KEEP_FILES` (the rows of older versions keep their metrics).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from annotations.models import Project
from curation import artifacts
from curation.evaluation import eval_summary
from curation.featurizers import Featurizer
from curation.learner import IncrementalLearner
from curation.models import ModelVersion, ProjectTraining, models_dir
from curation.status import class_needs

logger = logging.getLogger(__name__)

__all__ = [
    "KEEP_FILES",
    "Clock",
    "milestone",
    "version_save",
    "versions_prune",
]

#: Model files kept on disk per project.
KEEP_FILES = 10


def milestone(labels: int) -> int | None:
    """The largest of 1, 2, 5, 10, 20, 50, … not above `labels` (None below 1)."""
    if labels < 1:
        return None
    decade = 10 ** int(math.floor(math.log10(labels)))
    return max(step * decade for step in (1, 2, 5) if step * decade <= labels)


def versions_prune(*, project_id: int) -> int:
    """Delete the project's version rows that are neither recent, milestones nor current, and
    its model files but the newest KEEP_FILES; return the rows deleted."""
    rows = ModelVersion.objects.filter(project_id=project_id)
    newest = rows.aggregate(m=Max("version"))["m"]
    if newest is None:
        return 0
    _prune_files(project_id, newest)
    old = rows.filter(version__lte=newest - settings.MODEL_VERSIONS_KEPT).order_by("version")
    keep = set(
        ProjectTraining.objects.filter(project_id=project_id).values_list(
            "current_version_id", flat=True
        )
    )
    reached: set[int] = set()
    doomed = []
    for pk, labels in old.values_list("pk", "labels_used"):
        mark = milestone(labels)
        if mark is not None and mark not in reached:
            reached.add(mark)
            keep.add(pk)
        if pk not in keep:
            doomed.append(pk)
    if not doomed:
        return 0
    ModelVersion.objects.filter(pk__in=doomed).delete()
    logger.info("project %s: %d old model versions pruned", project_id, len(doomed))
    return len(doomed)


def _prune_files(project_id: int, newest: int) -> None:
    folder = models_dir() / f"project-{project_id}"
    for path in folder.glob("v*.dpmodel"):
        try:
            number = int(path.stem[1:])
        except ValueError:
            continue
        if number <= newest - KEEP_FILES:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# A run's new version
# --------------------------------------------------------------------------------------------


class Clock:
    """Milliseconds per step of a run, kept in the version's metrics and the benchmark: wall
    time (`laps`) and this thread's CPU time (`cpu_laps`, which other load on the machine
    hardly changes)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.last_cpu = time.thread_time()
        self.laps: dict[str, float] = {}
        self.cpu_laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.laps[name] = round((now - self.last) * 1000, 2)
        self.cpu_laps[name] = round((cpu - self.last_cpu) * 1000, 2)
        self.last, self.last_cpu = now, cpu

    def total(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def version_save(
    *,
    project: Project,
    training: ProjectTraining,
    learner: IncrementalLearner,
    featurizer: Featurizer,
    facts: dict[str, Any],
    clock: Clock,
) -> ModelVersion:
    """Write the model file (atomically) and its `ModelVersion` row, and make it current; in the
    caller's transaction, under the project's training lock. `facts`: the label fingerprint
    (`count`, `last_change`) and the run's `ranked` and `pool_sample` sizes."""
    count, last_change = facts["count"], facts["last_change"]
    previous = training.current_version
    # Carried over until the worker's accuracy estimate job refreshes it (`curation.jobs`).
    accuracy = previous.estimated_accuracy if previous else None
    cv_labels = (previous.metrics or {}).get("cv_labels", 0) if previous else 0
    number = (project.model_versions.aggregate(v=Max("version"))["v"] or 0) + 1
    artifact = Path(f"project-{project.pk}") / f"v{number}.dpmodel"
    balance = {name: int(n) for name, n in zip(learner.classes, learner.label_counts, strict=True)}
    metrics = {
        "labels_used": int(learner.n_labels),
        "class_balance": balance,
        "estimated_accuracy": accuracy,
        "cv_labels": cv_labels,
        "annotations_counted": count,
        "last_label_at": last_change.isoformat() if last_change else None,
        # No suggestions until the model has seen every class (`curation.status`).
        "cold": bool(learner.unseen_classes()),
        "ranking": learner.can_rank(),
        "needs": class_needs(learner.classes, learner.label_counts),
        "pool_sample": facts["pool_sample"],
        "ranked": facts["ranked"],
        # Who ranked the head: our model, or the project's prediction endpoint.
        "ranked_by": facts.get("ranked_by", "model"),
        "eval": eval_summary(project),
        "timings_ms": dict(clock.laps),
        "cpu_ms": dict(clock.cpu_laps),
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
    now = timezone.now()
    version = ModelVersion.objects.create(
        project=project,
        version=number,
        artifact=artifact.as_posix(),
        featurizer_name=featurizer.name,
        featurizer_version=featurizer.version,
        labels_used=learner.n_labels,
        class_balance=balance,
        estimated_accuracy=accuracy,
        metrics=metrics,
        strategy=training.strategy,
        trained_at=now,
        duration_ms=int(clock.total()),
    )
    training.current_version = version
    training.labels_seen = count
    training.labels_until = last_change
    training.trained_at = now
    training.save(update_fields=["current_version", "labels_seen", "labels_until", "trained_at"])
    return version
