"""What the project dashboard shows, kept as rows the training worker writes
(`curation.dashboard.dashboard_refresh`) so a page view only reads a few small tables.

Recounting a million answers on each view would cost seconds; instead the worker keeps
answers per annotator and hour (recomputing only the last hours at each refresh), one row of
project-wide counts per hour, and the rendered plots.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AnnotatorHour(models.Model):
    """Answers and skips one annotator gave in one project in one hour (UTC), by the hour the
    answer was first given (`Annotation.created_at`): later edits do not move it."""

    project = models.ForeignKey("annotations.Project", on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    hour = models.DateTimeField(help_text="The start of the hour, UTC.")
    answers = models.PositiveIntegerField(default=0, help_text="Answers that are not skips.")
    skips = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "annotator", "hour"], name="annotator_hour_unique"
            )
        ]
        # The dashboard's windows (last 48 hours, last 14 days) and the refresh's rewrite of
        # the last hours are ranges of hours within a project.
        indexes = [models.Index(fields=["project", "hour"], name="annotator_hour_idx")]

    def __str__(self) -> str:
        return f"{self.annotator_id} in {self.project_id} at {self.hour:%Y-%m-%d %H}h"


class ProjectStatsPoint(models.Model):
    """A project's counts as of one hour (UTC): the row of the current hour is rewritten at
    each refresh, so the series over time grows by one row an hour while labelling goes on.
    Rows older than two days are thinned to the last of each day (`dashboard_refresh`)."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="stats_points"
    )
    at = models.DateTimeField(help_text="The start of the hour, UTC.")
    measured_at = models.DateTimeField(help_text="When the counts were read.")
    items = models.PositiveIntegerField(default=0)
    complete = models.PositiveIntegerField(default=0)
    in_progress = models.PositiveIntegerField(
        default=0, help_text="Items with at least one answer that need more."
    )
    open = models.PositiveIntegerField(default=0, help_text="Items without any answer yet.")
    answers = models.PositiveIntegerField(default=0, help_text="Answers, skips included.")
    answers_remaining = models.PositiveIntegerField(
        default=0, help_text="Answers the items that are not complete still need."
    )
    gold_counts = models.JSONField(
        default=dict,
        blank=True,
        help_text="Final gold labels per class (of complete items, or decided by a reviewer).",
    )
    agreement_mean = models.FloatField(
        null=True, blank=True, help_text="Mean agreement of the complete items' gold labels."
    )
    open_reviews = models.PositiveIntegerField(default=0)
    label_errors = models.PositiveIntegerField(
        default=0, help_text="Likely label errors flagged and not yet handled."
    )
    duplicate_groups = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["project", "at"]
        constraints = [models.UniqueConstraint(fields=["project", "at"], name="stats_point_unique")]

    def __str__(self) -> str:
        return f"{self.project_id} at {self.at:%Y-%m-%d %H}h"


class DashboardState(models.Model):
    """The last refresh of a project's dashboard: when, what it had seen, and its plots."""

    project = models.OneToOneField(
        "annotations.Project", on_delete=models.CASCADE, related_name="dashboard"
    )
    refreshed_at = models.DateTimeField(
        null=True, blank=True, help_text="Empty until the first refresh has committed."
    )
    answers_seen = models.PositiveIntegerField(
        default=0, help_text="Answers (skips included) counted at the last refresh."
    )
    plots = models.JSONField(default=dict, blank=True, help_text="Plot name: SVG text.")
    summary = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the next due check compares with (counts at the refresh), and how "
        "long the refresh took.",
    )

    def __str__(self) -> str:
        if self.refreshed_at is None:
            return f"dashboard of {self.project_id} (not refreshed yet)"
        return f"dashboard of {self.project_id} as of {self.refreshed_at:%Y-%m-%d %H:%M}"
