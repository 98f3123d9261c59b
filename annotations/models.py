"""Projects, their label schema and members, the items to label and the annotations made."""

from __future__ import annotations

import random
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q


class Project(models.Model):
    class ItemKind(models.TextChoices):
        TEXT = "text", "Text"
        IMAGE = "image", "Image"

    class LabelingMode(models.TextChoices):
        SINGLE = "single", "Single-label classification"
        MULTI = "multi", "Multi-label classification"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    instructions = models.TextField(
        blank=True, help_text="Shown to annotators beside every item. Plain text."
    )
    item_kind = models.CharField(max_length=10, choices=ItemKind, default=ItemKind.TEXT)
    labeling_mode = models.CharField(
        max_length=10, choices=LabelingMode, default=LabelingMode.SINGLE
    )
    overlap = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="How many annotators must label each item.",
    )
    # Progress counters, kept by the services that add items and answers (see `project_recount`).
    item_count = models.PositiveIntegerField(default=0, editable=False)
    complete_count = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_gte_1"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_multi_label(self) -> bool:
        return self.labeling_mode == self.LabelingMode.MULTI

    @property
    def percent_complete(self) -> int:
        return int(100 * self.complete_count / self.item_count) if self.item_count else 0

    @property
    def remaining_count(self) -> int:
        return self.item_count - self.complete_count


_key_validator = RegexValidator(r"^[a-z0-9]$", "A keyboard key is one lowercase letter or digit.")


class LabelClass(models.Model):
    """One class of the project's label schema, in display order."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="label_classes")
    name = models.CharField(max_length=100)
    color = models.CharField(
        max_length=7,
        default="#4f7cff",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour like #4f7cff.")],
    )
    key = models.CharField(
        max_length=1,
        blank=True,
        validators=[_key_validator],
        help_text="Keyboard shortcut; 1–9 follow the order when left blank.",
    )
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["project", "order", "id"]
        verbose_name_plural = "label classes"
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="labelclass_unique_name"),
            models.UniqueConstraint(
                fields=["project", "key"],
                condition=~Q(key=""),
                name="labelclass_unique_key",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator", "Annotator"
        REVIEWER = "reviewer", "Reviewer"
        ADMIN = "admin", "Project admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} of {self.project}"


def item_image_path(item: Item, filename: str) -> str:
    # Stored under a random name: the original name is user input and stays in external_id.
    return f"projects/{item.project_id}/{uuid.uuid4().hex}{_suffix(filename)}"


def _suffix(filename: str) -> str:
    dot = filename.rfind(".")
    return filename[dot:].lower() if dot != -1 else ""


def random_priority() -> float:
    """New items enter the queue in random order, so the first items served are a random
    sample of the data rather than the first rows of a file."""
    return random.random()


class ItemQuerySet(models.QuerySet):
    def needing_annotation(self) -> ItemQuerySet:
        return self.filter(needs_annotation=True)


class Item(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    external_id = models.CharField(max_length=255)
    text = models.TextField(blank=True)
    image = models.FileField(upload_to=item_image_path, blank=True, max_length=255)
    image_format = models.CharField(max_length=10, blank=True)
    image_width = models.PositiveIntegerField(null=True, blank=True)
    image_height = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Queue state, kept on the row so "next item" is one walk of one partial index.
    priority = models.FloatField(default=random_priority)
    annotation_count = models.PositiveIntegerField(default=0)
    needs_annotation = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ItemQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="item_unique_external_id"
            ),
        ]
        indexes = [
            # The queue: walk the open items of a project from the highest priority down.
            models.Index(
                fields=["project", "-priority", "id"],
                condition=Q(needs_annotation=True),
                name="item_queue_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"


class ItemLease(models.Model):
    """An item handed out to an annotator, reserved for them until `expires_at`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="leases")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "user"], name="lease_unique_item_user"),
        ]
        indexes = [
            models.Index(fields=["project", "user", "expires_at"], name="lease_user_idx"),
            models.Index(fields=["item", "expires_at"], name="lease_item_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.item} leased to {self.user} until {self.expires_at:%H:%M:%S}"


class Annotation(models.Model):
    """One annotator's answer for one item. Edits update it in place and are logged as
    revisions; a resent submission (same client UUID) changes nothing."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotations")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations"
    )
    labels = models.JSONField(default=list, blank=True)
    skipped = models.BooleanField(default=False)
    time_spent_ms = models.PositiveIntegerField(default=0)
    client_uuid = models.UUIDField(unique=True, default=uuid.uuid4)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="annotation_unique"),
        ]
        indexes = [
            # The annotator's history strip and "what have I done in this project".
            models.Index(
                fields=["project", "annotator", "-updated_at"], name="annotation_hist_idx"
            ),
            # "How many have I answered" on every submission: an index-only count.
            models.Index(
                fields=["project", "annotator"],
                condition=Q(skipped=False),
                name="annotation_answered_idx",
            ),
            # The trainer's catch-up: "what changed in this project since the model I have".
            models.Index(fields=["project", "updated_at"], name="annotation_changed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.item}: {', '.join(self.labels) or 'skipped'}"

    def clean(self) -> None:
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            raise ValidationError({"labels": "Labels must be a list of class names."})


class AnnotationRevision(models.Model):
    """An edit of an annotation, kept as an audit trail and to make edits idempotent too."""

    annotation = models.ForeignKey(Annotation, on_delete=models.CASCADE, related_name="revisions")
    client_uuid = models.UUIDField(unique=True)
    labels = models.JSONField(default=list)
    skipped = models.BooleanField(default=False)
    previous_labels = models.JSONField(default=list)
    previous_skipped = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"revision of {self.annotation_id}: {self.previous_labels} -> {self.labels}"
