"""Saving a project's settings page: the project's own settings and those of its model in the
loop (`curation.models.ProjectTraining`), in one transaction. `project_update` adds the name and
the schema (item kind, labelling mode) for the API and Django admin.

A new overlap goes through `services.project_set_overlap`, which recounts progress; a new review
threshold or consensus rebuilds the gold labels, so the review queue follows the new rule at
once rather than only for items answered from now on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from annotations.gold import gold_rebuild
from annotations.label_classes import project_schema_set
from annotations.locks import project_write_lock
from annotations.models import Project
from annotations.services import project_set_overlap
from curation.models import ProjectTraining

PROJECT_FIELDS = (
    "description",
    "instructions",
    "overlap",
    "serve_partial_first",
    "review_threshold",
    "review_model_confidence",
    "consensus",
    "quality_threshold",
)
TRAINING_FIELDS = ("strategy", "exploration", "eval_share", "suggestions", "suggestion_source")
# Dataset versions (`curation.dataset_versions`): kept on the same row.
VERSION_FIELDS = ("snapshot_every", "split_validation", "split_test", "split_stratified")
# Changing these changes which items go to review and what their gold label is.
_GOLD_RULES = {"review_threshold", "consensus"}


def project_settings_update(
    *,
    project: Project,
    values: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
) -> list[str]:
    """Apply `values` (project fields) and `training` (ProjectTraining fields); returns the
    names of the settings that changed."""
    training = training or {}
    unknown = (set(values) - set(PROJECT_FIELDS)) | (
        set(training) - {*TRAINING_FIELDS, *VERSION_FIELDS}
    )
    if unknown:
        raise ValidationError(f"Not a project setting: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        # The project's write lock before its row, and the row FOR NO KEY UPDATE: a new overlap
        # rewrites every item, which must not wait on a submission that waits on this row.
        project_write_lock(project.pk, exclusive=True)
        locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        changed = [f for f, v in values.items() if getattr(locked, f) != v]
        for name in changed:
            setattr(locked, name, values[name])
        locked.full_clean()
        plain = [f for f in changed if f != "overlap"]
        if plain:
            locked.save(update_fields=[*plain, "updated_at"])

        row = ProjectTraining.objects.filter(project=locked).first() or ProjectTraining(
            project=locked
        )
        training_changed = [f for f, v in training.items() if getattr(row, f) != v]
        for name in training_changed:
            setattr(row, name, training[name])
        if training_changed:
            row.full_clean(exclude=["project"])
            if row.pk is None:
                row.save()
            else:
                row.save(update_fields=training_changed)

        if "overlap" in changed:
            project_set_overlap(locked, locked.overlap)  # recounts and rebuilds gold labels
        elif _GOLD_RULES & set(changed):
            gold_rebuild(locked)
    project.refresh_from_db()
    return changed + training_changed


def project_rename(*, project: Project, name: str) -> bool:
    """Give the project a new (unique) name; returns whether it changed."""
    name = (name or "").strip()
    with transaction.atomic():
        locked = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        if locked.name == name:
            return False
        locked.name = name
        locked.full_clean(exclude=["item_kind", "labeling_mode"])
        locked.save(update_fields=["name", "updated_at"])
    project.name = name
    return True


def project_update(
    *,
    project: Project,
    values: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
) -> list[str]:
    """`project_settings_update`, and the name and the schema (item kind and labelling mode,
    frozen once the project has items) when `values` has them; returns what changed. All or
    nothing."""
    values = dict(values)
    name = values.pop("name", None)
    schema = {f: values.pop(f) for f in ("item_kind", "labeling_mode") if f in values}
    changed: list[str] = []
    with transaction.atomic():
        if name is not None and project_rename(project=project, name=name):
            changed.append("name")
        if schema:
            before = (project.item_kind, project.labeling_mode)
            project_schema_set(
                project=project,
                item_kind=schema.get("item_kind", project.item_kind),
                labeling_mode=schema.get("labeling_mode", project.labeling_mode),
            )
            changed += [
                f
                for f, old in zip(("item_kind", "labeling_mode"), before, strict=True)
                if getattr(project, f) != old
            ]
        changed += project_settings_update(project=project, values=values, training=training)
    return changed
