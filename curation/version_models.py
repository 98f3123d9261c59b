"""Dataset versions: immutable, named snapshots of a project's data (`curation.dataset_versions`).

The data itself is not copied into rows: each version is one compressed, content-addressed file
under `versions_dir()` (`curation.version_files`), and the row here holds what the lists show
and what is needed to trust the file (its SHA-256, checked on every read). Only the model
metrics, computed after the file is written, are added to a row later.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q


def versions_dir() -> Path:
    """Where version files live, beside the media; read at call time so tests can move it."""
    return Path(settings.DATA_DIR) / "versions"


class DatasetVersion(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        BUILDING = "building", "Being written"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "By hand"
        AUTOMATIC = "automatic", "Every N gold labels"

    class Metrics(models.TextChoices):
        PENDING = "pending", "Being measured"
        DONE = "done", "Measured"
        SKIPPED = "skipped", "Too few labels"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="dataset_versions"
    )
    number = models.PositiveIntegerField(help_text="1, 2, 3… in the order they were asked for.")
    name = models.CharField(max_length=100)
    note = models.TextField(blank=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for an automatic version.",
    )
    trigger = models.CharField(max_length=10, choices=Trigger, default=Trigger.MANUAL)
    status = models.CharField(max_length=8, choices=Status, default=Status.QUEUED)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Filled when the file is written.
    content_hash = models.CharField(
        max_length=64,
        blank=True,
        help_text="SHA-256 of the version's content (schema, split rule, items): equal for "
        "equal data, whatever the name, author or time.",
    )
    file_name = models.CharField(max_length=200, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    file_size = models.BigIntegerField(null=True, blank=True)
    items = models.PositiveIntegerField(default=0)
    labelled = models.PositiveIntegerField(
        default=0, help_text="Items with a final gold label (what training and exports use)."
    )
    answers = models.PositiveIntegerField(default=0)
    class_counts = models.JSONField(default=dict, blank=True)
    split_counts = models.JSONField(
        default=dict, blank=True, help_text="Labelled items per split, and per class within it."
    )
    split_rule = models.JSONField(default=dict, blank=True)
    # The model trained on the train split and scored on the test split.
    metrics_status = models.CharField(max_length=8, choices=Metrics, default=Metrics.PENDING)
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["project", "name"], name="version_name_unique"),
        ]
        indexes = [
            models.Index(
                fields=["project", "status"],
                condition=Q(status__in=["queued", "building"]),
                name="version_pending_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} of project {self.project_id}"

    @property
    def path(self) -> Path:
        return versions_dir() / self.file_name

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY
