"""The model in the loop, as the database sees it: trained versions and per-project settings.

Model weights live in files under `settings.DATA_DIR / "models"` (see `curation.artifacts`);
the rows here record which file is current, how it was trained and how good it looks, so the
admin can show the history and a restarted process knows what to load.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from curation.strategy_names import DEFAULT_STRATEGY, STRATEGY_NAMES

#: Per-item scorers, plus the batch-diverse variant: margin scores, then the head of the queue
#: picked greedily so that it is not a run of near-duplicates (`strategies.batch_diverse`).
BATCH_DIVERSE = "batch_diverse"
STRATEGY_CHOICES = [(name, name.replace("_", " ").capitalize()) for name in STRATEGY_NAMES]
STRATEGY_CHOICES.append((BATCH_DIVERSE, "Batch-diverse margin"))


def new_split_seed() -> str:
    """A project's own split seed, so two projects with the same ids split differently."""
    return secrets.token_hex(8)


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


class Suggestions(models.TextChoices):
    OFF = "off", "Off"
    HIGHLIGHT = "highlight", "Highlight the model's guess"
    PRESELECT = "preselect", "Pre-select the model's guess"


class SuggestionSource(models.TextChoices):
    """Whose guess the annotate page shows when both our model and an imported prediction
    (`annotations.PreAnnotation`) have one for an item."""

    MODEL = "model", "Our model, else an imported prediction"
    PREDICTIONS = "predictions", "An imported prediction, else our model"
    MODEL_ONLY = "model_only", "Our model only"


class ProjectTraining(models.Model):
    """Per-project training settings and state; also the row locked so one project trains in
    one place at a time (`select_for_update` in `curation.trainer`)."""

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
    eval_share = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of served items drawn uniformly at random and predicted before their "
        "label arrives: the evaluation slice behind the accuracy the app shows.",
    )
    suggestions = models.CharField(
        max_length=16,
        choices=Suggestions.choices,
        default=Suggestions.HIGHLIGHT,
        help_text="How the annotate page shows the model's guess for the current item.",
    )
    suggestion_source = models.CharField(
        max_length=16,
        choices=SuggestionSource.choices,
        default=SuggestionSource.MODEL,
        help_text="Whose guess is shown when our model and an imported prediction both have "
        "one. Evaluation items never get either.",
    )
    feature_set = models.CharField(
        max_length=16,
        blank=True,
        default="",
        editable=False,
        help_text="With item vectors: the features the model trains on (builtin, vectors or "
        "both), the best by cross-validated accuracy at the last estimate; blank: both, until "
        "measured (`curation.feature_choice`).",
    )
    current_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    labels_until = models.DateTimeField(
        null=True, blank=True, help_text="Latest annotation change the current model has seen."
    )
    labels_seen = models.PositiveIntegerField(
        default=0, help_text="Non-skipped annotations counted at the last training."
    )
    trained_at = models.DateTimeField(null=True, blank=True)
    # The last weighted consensus (`curation.consensus`), for projects that use it.
    annotator_quality = models.JSONField(
        default=list,
        blank=True,
        help_text="Per annotator, lowest quality first: id, username, quality, agreement with "
        "the consensus, worst class and answers, as measured by the last weighted consensus.",
    )
    consensus_at = models.DateTimeField(null=True, blank=True)
    consensus_answers = models.PositiveIntegerField(
        default=0, help_text="Non-skipped annotations counted at the last weighted consensus."
    )
    consensus_note = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the last weighted consensus fell back to the majority, if it did.",
    )
    analysis_growth = models.FloatField(
        default=0.25,
        validators=[MinValueValidator(0.05), MaxValueValidator(10.0)],
        help_text="Label errors, duplicates and outliers are looked for again when the gold "
        "labels (or items) grew by this share since the last run.",
    )
    # Dataset versions (`curation.dataset_versions`).
    snapshot_every = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Save a dataset version automatically every this many new gold labels. "
        "Blank: only by hand.",
    )
    split_seed = models.CharField(
        max_length=64,
        default=new_split_seed,
        help_text="Mixed with each item's external id to place it in a split; changing it moves "
        "items between splits in later versions.",
    )
    split_validation = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of items in the validation split of a dataset version.",
    )
    split_test = models.FloatField(
        default=0.1,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Share of items in the test split, on which each version's model is scored.",
    )
    split_stratified = models.BooleanField(
        default=False,
        help_text="Keep each class's share the same in every split; items keep the split an "
        "earlier version gave them.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(exploration__gte=0.0) & Q(exploration__lte=1.0),
                name="training_exploration_share",
            ),
            models.CheckConstraint(
                condition=Q(eval_share__gte=0.0) & Q(eval_share__lte=0.5),
                name="training_eval_share",
            ),
            models.CheckConstraint(
                condition=Q(split_validation__gte=0.0)
                & Q(split_validation__lte=0.5)
                & Q(split_test__gte=0.0)
                & Q(split_test__lte=0.5),
                name="training_split_shares",
            ),
        ]

    def __str__(self) -> str:
        return f"training of {self.project}"


class EvalSample(models.Model):
    """An item of the evaluation slice: drawn uniformly at random from the open items, served
    like any other, and predicted by the model *before* its label arrives (test-then-train).

    The prediction is refreshed by every model that has not seen the label, so it is always the
    latest model's out-of-sample guess; once the label arrives the sample is resolved (`correct`)
    and the item joins training like any other. Accuracy over resolved samples, with a Wilson
    interval, is the honest accuracy the app shows: uncertainty sampling biases any accuracy
    measured on the items it picked itself.
    """

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="eval_samples"
    )
    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, related_name="eval_sample"
    )
    predicted = models.JSONField(default=list, help_text="Class names the model predicted.")
    confidence = models.FloatField(null=True, blank=True)
    predicted_by = models.PositiveIntegerField(
        null=True, blank=True, help_text="Model version that made the prediction."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    truth = models.JSONField(null=True, blank=True, help_text="The label it got (majority).")
    correct = models.BooleanField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "resolved_at"], name="evalsample_project_idx"),
        ]

    def __str__(self) -> str:
        return f"eval sample {self.item_id} of {self.project_id}"


class ItemFeatures(models.Model):
    """An image item's feature vector, computed once (at import, or on first use for items
    imported before) and stored, so training never decodes the same image twice.

    One row per item: the vector is valid only for the featurizer name and version it records;
    `curation.features.item_features` recomputes and overwrites a row made by another one.
    Text items have no row: hashing a text on the fly costs less than storing its wide vector.
    """

    item = models.OneToOneField(
        "annotations.Item", on_delete=models.CASCADE, primary_key=True, related_name="features"
    )
    featurizer_name = models.CharField(max_length=100)
    featurizer_version = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="`curation.featurizers.serialize` output (float32).")

    class Meta:
        verbose_name_plural = "item features"

    def __str__(self) -> str:
        return (
            f"features of item {self.item_id} ({self.featurizer_name} v{self.featurizer_version})"
        )


# The analyses' results, the dataset versions and the dashboard's rows live in modules of their
# own; importing them here registers the models.
from curation.dashboard_models import (  # noqa: E402,F401
    AnnotatorHour,
    DashboardState,
    ProjectStatsPoint,
)
from curation.dataset_models import (  # noqa: E402,F401
    AnalysisRun,
    DuplicateGroup,
    ItemDuplicate,
    ItemOutlier,
    ItemPrediction,
    LabelIssue,
    PredictionChange,
)
from curation.version_models import DatasetVersion  # noqa: E402,F401
