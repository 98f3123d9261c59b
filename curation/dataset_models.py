"""What the worker's analyses found about a project's data: predictions for every item, likely
label errors, duplicate groups and outlier scores, and the runs that produced them.

The data browser filters and sorts a million items by these columns, so each is a plain column
of a row keyed by the item (one join per filter, an index per sortable score) rather than a
JSON blob. Rows are rewritten by the next run of their analysis; what must outlive a run (a
flag a reviewer dismissed, a prediction that changed) is kept explicitly.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class AnalysisRun(models.Model):
    """One run of an analysis over a project's data, queued on request or when due, run by a
    training worker (`curation.jobs`), its progress shown on the pages over the websocket."""

    class Kind(models.TextChoices):
        PREDICTIONS = "predictions", "Model predictions"
        LABEL_ERRORS = "label_errors", "Likely label errors"
        DUPLICATES = "duplicates", "Duplicates"
        OUTLIERS = "outliers", "Outliers"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="analysis_runs"
    )
    kind = models.CharField(max_length=16, choices=Kind)
    status = models.CharField(max_length=8, choices=Status, default=Status.QUEUED)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty for a run the worker started because it was due.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="The running worker's last progress report."
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(default=0.0, help_text="Share done, 0–1.")
    message = models.CharField(max_length=200, blank=True)
    model_version = models.PositiveIntegerField(null=True, blank=True)
    basis = models.PositiveIntegerField(
        default=0,
        help_text="What the run covered (gold labels or items), to tell when the next is due.",
    )
    result = models.JSONField(default=dict, blank=True, help_text="Summary counts.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "kind", "-created_at"], name="run_latest_idx")]
        constraints = [
            # At most one queued or running run per project and kind: a second request joins it.
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_run",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.project_id} ({self.status})"


class ItemPrediction(models.Model):
    """The model's current prediction for an item, from the latest predictions run."""

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="prediction"
    )
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    labels = models.JSONField(default=list, help_text="The predicted class names.")
    label = models.CharField(max_length=100, blank=True, help_text="The most probable class.")
    confidence = models.FloatField(help_text="Probability of the most probable class.")
    version = models.PositiveIntegerField(help_text="The model version that predicted it.")
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "confidence", "item"], name="prediction_conf_idx"),
            models.Index(fields=["project", "label", "item"], name="prediction_label_idx"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.label} ({self.confidence:.2f}, v{self.version})"


class PredictionChange(models.Model):
    """An item's prediction by one model version, kept when it differed from the one before,
    so the item page can show how the model's opinion moved across versions."""

    item = models.ForeignKey(
        "annotations.Item", on_delete=models.CASCADE, related_name="prediction_changes"
    )
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    version = models.PositiveIntegerField()
    labels = models.JSONField(default=list)
    confidence = models.FloatField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["item", "version"]
        indexes = [models.Index(fields=["item", "version"], name="prediction_change_idx")]

    def __str__(self) -> str:
        return f"item {self.item_id} v{self.version}: {self.labels}"


class LabelIssue(models.Model):
    """How likely an item's gold label is wrong, by confident learning on out-of-sample
    probabilities, and what became of the flag."""

    class Status(models.TextChoices):
        NONE = "", "Not flagged"
        FLAGGED = "flagged", "Likely label error"
        IN_REVIEW = "review", "Sent to review"
        FIXED = "fixed", "Relabelled"
        DISMISSED = "dismissed", "Label is right"

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="label_issue"
    )
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    gold = models.JSONField(help_text="The gold label(s) the score is about.")
    score = models.FloatField(help_text="How likely the gold label is wrong, 0–1.")
    suggested = models.CharField(max_length=100, blank=True)
    probabilities = models.JSONField(default=dict, help_text="Out-of-sample, per class.")
    model_version = models.PositiveIntegerField(null=True, blank=True)
    run = models.ForeignKey(
        AnalysisRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.NONE, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    decision = models.ForeignKey(
        "annotations.ReviewEvent",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The review decision that closed the flag: reopening it opens the flag again.",
    )
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["project", "score", "item"], name="label_issue_score_idx"),
            models.Index(
                fields=["project", "status"], condition=~Q(status=""), name="label_issue_status_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.score:.2f} → {self.suggested or '?'}"


class DuplicateGroup(models.Model):
    """Items that are the same (exact: normalised text or image bytes) or nearly the same."""

    class Kind(models.TextChoices):
        EXACT = "exact", "Exact"
        NEAR = "near", "Near"

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="duplicate_groups"
    )
    kind = models.CharField(max_length=5, choices=Kind)
    size = models.PositiveIntegerField(default=0)
    conflicting = models.BooleanField(
        default=False, help_text="Its items have different gold labels."
    )
    run = models.ForeignKey(
        AnalysisRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["project", "conflicting"], name="duplicate_group_idx")]

    def __str__(self) -> str:
        return f"{self.kind} duplicates of {self.size} items"


class ItemDuplicate(models.Model):
    """An item's place in a duplicate group (an item belongs to at most one)."""

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="duplicate"
    )
    group = models.ForeignKey(DuplicateGroup, on_delete=models.CASCADE, related_name="members")
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    similarity = models.FloatField(
        default=1.0, help_text="Estimated similarity to the nearest other member."
    )

    class Meta:
        indexes = [models.Index(fields=["project", "group"], name="item_duplicate_idx")]

    def __str__(self) -> str:
        return f"item {self.item_id} in group {self.group_id}"


class ItemOutlier(models.Model):
    """How far an item lies from the rest of the project in feature space (higher: stranger)."""

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="outlier"
    )
    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    neighbours = models.JSONField(
        default=list,
        blank=True,
        help_text="The nearest items by the project's features, nearest first: "
        "[[item id, similarity], …] (the item page's “more like this”).",
    )
    run = models.ForeignKey(
        AnalysisRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["project", "score", "item"], name="outlier_score_idx")]

    def __str__(self) -> str:
        return f"item {self.item_id}: outlier score {self.score:.3f}"
