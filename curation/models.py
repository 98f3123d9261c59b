"""The model in the loop, as the database sees it: trained versions and per-project settings.

Model weights live in files under `settings.DATA_DIR / "models"` (see `curation.artifacts`);
the rows here record which file is current, how it was trained and how good it looks, so the
admin can show the history and a restarted process knows what to load.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from curation.strategies import DEFAULT_STRATEGY, STRATEGIES

STRATEGY_CHOICES = [(name, name.replace("_", " ").capitalize()) for name in STRATEGIES]


def models_dir() -> Path:
    """Where model files live; read at call time so tests can point DATA_DIR elsewhere."""
    return Path(settings.DATA_DIR) / "models"


class ModelVersion(models.Model):
    """One trained model of a project: its file, its training data summary and its metrics."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="model_versions"
    )
    version = models.PositiveIntegerField()
    artifact = models.CharField(
        max_length=255, help_text='Model file, relative to DATA_DIR / "models".'
    )
    featurizer_name = models.CharField(max_length=100)
    featurizer_version = models.PositiveIntegerField()
    labels_used = models.PositiveIntegerField(default=0)
    class_balance = models.JSONField(default=dict, blank=True)
    estimated_accuracy = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    strategy = models.CharField(max_length=32, choices=STRATEGY_CHOICES, default=DEFAULT_STRATEGY)
    trained_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="modelversion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.version}"

    @property
    def path(self) -> Path:
        return models_dir() / self.artifact


class ProjectTraining(models.Model):
    """Per-project training settings and state; also the row locked so one project trains in
    one place at a time (`select_for_update` in `curation.services.train_project_once`)."""

    project = models.OneToOneField(
        "annotations.Project", on_delete=models.CASCADE, related_name="training"
    )
    strategy = models.CharField(
        max_length=32,
        choices=STRATEGY_CHOICES,
        default=DEFAULT_STRATEGY,
        help_text="How the queue is ranked once the model has enough labels of every class.",
    )
    exploration = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of served items drawn at random, to avoid sampling bias.",
    )
    current_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    labels_seen = models.PositiveIntegerField(
        default=0, help_text="Non-skipped annotations counted at the last training."
    )
    trained_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(exploration__gte=0.0) & Q(exploration__lte=1.0),
                name="training_exploration_share",
            ),
        ]

    def __str__(self) -> str:
        return f"training of {self.project}"
