"""A project's model history: which `ModelVersion` rows and model files are kept.

The trainer saves a version after every label, so without pruning a project with 100,000
labels would carry 100,000 rows. After each run (`versions_prune`) a project keeps:

- the newest `MODEL_VERSIONS_KEPT` rows (setting, default 200): the recent history, label by
  label, which is what the admin's version list is read for;
- milestones: the first version at or past 1, 2, 5, 10, 20, 50, 100, … labels, so the learning
  curve (accuracy against labels) stays readable from the first model on, in a few rows per
  tenfold growth;
- the current version (`ProjectTraining.current_version`, normally the newest anyway).

Nothing else points at an older row: `EvalSample.predicted_by` keeps the number of the version
that made a prediction, not a reference, and suggestions load the current version. Model files
are fewer still: the newest `KEEP_FILES` (the rows of older versions keep their metrics).
"""

from __future__ import annotations

import logging
import math

from django.conf import settings
from django.db.models import Max

from curation.models import ModelVersion, ProjectTraining, models_dir

logger = logging.getLogger(__name__)

__all__ = ["KEEP_FILES", "milestone", "versions_prune"]

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
