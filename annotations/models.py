"""Projects, their label schema and members, the items to label and the annotations made."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.db.models import Q


class Project(models.Model):
    class ItemKind(models.TextChoices):
        TEXT = "text", "Text"
        IMAGE = "image", "Image"

    class LabelingMode(models.TextChoices):
        SINGLE = "single", "Single-label classification"
        MULTI = "multi", "Multi-label classification"

    class Consensus(models.TextChoices):
        MAJORITY = "majority", "Unanimous, else majority"
        CROWDLAB = "crowdlab", "Weighted by annotator quality and the model (CROWDLAB)"

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
    serve_partial_first = models.BooleanField(
        default=True,
        help_text="Serve items that already have some answers and need more before new ones, "
        "so items get complete (and reviewable) sooner.",
    )
    # Review and gold labels (see `annotations.gold` and `annotations.review`).
    review_threshold = models.FloatField(
        default=0.66,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A complete item goes to review when the share of its annotators who agree "
        "with the majority is below this (0.66: a 2-of-3 majority passes, 1-of-2 does not).",
    )
    review_model_confidence = models.FloatField(
        null=True,
        blank=True,
        default=0.9,
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="An item goes to review when the model, before learning its label, gives "
        "another class at least this probability. Blank: never.",
    )
    consensus = models.CharField(
        max_length=10,
        choices=Consensus,
        default=Consensus.MAJORITY,
        help_text="How an item's gold label is derived when no reviewer decided it.",
    )
    quality_threshold = models.FloatField(
        default=0.7,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Annotators whose accuracy against gold labels is below this are listed "
        "to project admins on the quality page.",
    )
    # Progress counters, kept by the services that add items and answers (see `project_recount`).
    vector_dim = models.PositiveIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Length of the items' embeddings: set by the first vector stored, then fixed.",
    )
    item_count = models.PositiveIntegerField(default=0, editable=False)
    complete_count = models.PositiveIntegerField(default=0, editable=False)
    # The event types at least one active webhook of the project listens to, kept by
    # `annotations.webhooks.services`: a submission reads it with the project it loads anyway,
    # so a project without hooks pays no query for them.
    webhook_events = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_gte_1"),
            models.CheckConstraint(
                condition=Q(review_threshold__gte=0.0) & Q(review_threshold__lte=1.0),
                name="project_review_threshold",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.consensus == self.Consensus.CROWDLAB and self.is_multi_label:
            raise ValidationError(
                {"consensus": "Weighted consensus (CROWDLAB) is for single-label projects only."}
            )

    def class_names(self) -> ClassNames:
        """The label class names, in schema order, retired ones included (they stay in the
        data); which are retired rides along as `.retired` (one query, in plain SQL: every
        submission reads them, and building the ORM query cost more than running it)."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT name, retired FROM {connection.ops.quote_name(LabelClass._meta.db_table)}"
                ' WHERE project_id = %s ORDER BY "order", id',
                [self.pk],
            )
            return ClassNames((name, bool(retired)) for name, retired in cursor.fetchall())

    @property
    def is_multi_label(self) -> bool:
        return self.labeling_mode == self.LabelingMode.MULTI

    @property
    def percent_complete(self) -> int:
        return int(100 * self.complete_count / self.item_count) if self.item_count else 0

    @property
    def remaining_count(self) -> int:
        return self.item_count - self.complete_count


class ClassNames(list):
    """A project's class names in schema order (a plain list of str to every reader), with the
    names of the retired classes in `retired`: answers that exist keep them, new answers may
    not use them (`annotations.services.validate_labels`)."""

    def __init__(self, rows: Iterable[tuple[str, bool]] = ()) -> None:
        rows = list(rows)
        super().__init__(name for name, _ in rows)
        self.retired: frozenset[str] = frozenset(name for name, retired in rows if retired)

    @property
    def offered(self) -> list[str]:
        """The names annotators and reviewers may choose, in schema order."""
        return [n for n in self if n not in self.retired]


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
    retired = models.BooleanField(
        default=False,
        help_text="Kept in the data and exports, no longer offered for new answers.",
    )

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


#: Queue priorities from here up are items a project admin moved to the front: the trainer ranks
#: the queue with priorities in [1, 2) and leaves these alone, so they stay first until answered.
PINNED_PRIORITY = 2.0


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
    priority = models.FloatField(
        default=random_priority,
        help_text="Queue order, highest first: random below 1, ranked by the model from 1 to 2, "
        "moved to the front by an admin from 2 up (the model leaves those alone).",
    )
    annotation_count = models.PositiveIntegerField(default=0)
    needs_annotation = models.BooleanField(default=True)
    # Set for items assigned to named annotators (`ItemAssignment`): only they get the item, and
    # it is complete when all of them answered. None: the project's overlap, anyone may answer.
    required_answers = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    # Answers wanted on top of that because the item was sent back for relabelling
    # (`annotations.bulk.items_relabel`): its earlier answers stay and count, and it waits for
    # this many more. A database default, so raw inserts (the benchmarks' COPY) need not name it;
    # not Positive…: a CHECK would make adding the column scan every row.
    relabel_answers = models.SmallIntegerField(default=0, db_default=0, editable=False)
    # The model's guess for the item, {"labels": [...], "p": confidence}, and the version that
    # made it: written by the training worker with the ranking (`curation.ranking_write`), so
    # the annotate page shows it without loading a model (`curation.suggest`). Null: no guess
    # (never ranked, an evaluation item, or ranked while the model was cold).
    suggestion = models.JSONField(null=True, blank=True, editable=False)
    # IntegerField, not Positive…: a CHECK would make adding the column scan every row.
    suggestion_version = models.IntegerField(null=True, blank=True, editable=False)
    # 64 bits of the SHA-256 of the normalised text or the image's bytes
    # (`annotations.content_hash`): equal hashes are exact duplicates. Set at import; null for
    # items added otherwise until the duplicates analysis fills it.
    content_hash = models.BigIntegerField(null=True, blank=True, editable=False)
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
            # Items that have answers and need more, served first when the project says so.
            models.Index(
                fields=["project", "-priority", "id"],
                condition=Q(needs_annotation=True, annotation_count__gt=0),
                name="item_partial_idx",
            ),
            # The data browser: a project's items in id order without a heap visit per item to
            # check its project (its pages and counts join every filter's table to this walk).
            models.Index(fields=["project", "id"], name="item_browse_idx"),
            # The browser's "Answers" sort (annotation_count already keeps updates off HOT).
            models.Index(fields=["project", "annotation_count", "id"], name="item_answers_idx"),
            # Exact duplicates: an import's lookup, the duplicates analysis's grouping.
            models.Index(fields=["project", "content_hash"], name="item_content_hash_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"

    def answers_wanted(self, project: Project) -> int:
        return (self.required_answers or project.overlap) + self.relabel_answers


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
            # The dashboard's refresh recounts the answers of the last hours of a project
            # (`curation.dashboard`): a range of created_at, written once per answer.
            models.Index(fields=["project", "created_at"], name="annotation_created_idx"),
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


class ItemAssignment(models.Model):
    """An item given to a named annotator by a project admin (a calibration set everyone labels,
    or a slice for one person). Assigned items go only to their assignees, ahead of the queue."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="item_assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "user", "item"]
        constraints = [
            models.UniqueConstraint(fields=["item", "user"], name="assignment_unique"),
        ]
        indexes = [models.Index(fields=["project", "user"], name="assignment_user_idx")]

    def __str__(self) -> str:
        return f"{self.item} assigned to {self.user}"


class GoldSource(models.TextChoices):
    ADJUDICATED = "adjudicated", "Adjudicated by a reviewer"
    UNANIMOUS = "unanimous", "Unanimous"
    MAJORITY = "majority", "Majority"
    CONSENSUS = "consensus", "Weighted consensus"
    TIE = "tie", "Tie (no gold label)"


class GoldLabel(models.Model):
    """An item's final label, derived from its answers and any review decision
    (`annotations.gold`). One row per item with at least one non-skipped answer; `labels` is
    None when there is no gold label (a tie). Export and training read these rows."""

    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="gold"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    labels = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=12, choices=GoldSource)
    agreement = models.FloatField(
        null=True, blank=True, help_text="Share of the answers equal to the majority answer."
    )
    answers = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The trainer's catch-up: "which gold labels changed since the model I have".
            models.Index(fields=["project", "updated_at"], name="gold_changed_idx"),
            # "How many items have a gold label": an index-only count on every training run.
            models.Index(
                fields=["project"], condition=Q(labels__isnull=False), name="gold_labelled_idx"
            ),
            # The data browser's "Agreement" sort, a keyset walk like the analyses' scores.
            models.Index(fields=["project", "agreement", "item"], name="gold_agreement_idx"),
        ]

    def __str__(self) -> str:
        return f"gold of {self.item_id}: {self.labels} ({self.source})"


class Review(models.Model):
    """An item in (or through) review: why it is there, who holds it, and the decision."""

    class Status(models.TextChoices):
        OPEN = "open", "Waiting for review"
        DECIDED = "decided", "Decided"

    class Reason(models.TextChoices):
        DISAGREEMENT = "disagreement", "Annotators disagree"
        MODEL = "model", "The model disagrees"
        FLAG = "flag", "Flagged"
        LABEL_ERROR = "label_error", "Likely label error"
        DUPLICATE = "duplicate", "Duplicates with different labels"
        RELABEL = "relabel", "Relabelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reviews")
    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="review")
    status = models.CharField(max_length=8, choices=Status, default=Status.OPEN)
    reasons = models.JSONField(default=list, help_text="`Review.Reason` values, in order.")
    model_labels = models.JSONField(default=list, blank=True)
    model_confidence = models.FloatField(null=True, blank=True)
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    flag_note = models.TextField(blank=True)
    # The reviewer holding the item; a claim stops counting when it expires, like a lease.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    labels = models.JSONField(null=True, blank=True, help_text="The decided label(s).")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["project", "created_at", "id"],
                condition=Q(status="open"),
                name="review_queue_idx",
            ),
            models.Index(fields=["project", "-decided_at"], name="review_decided_idx"),
        ]

    def __str__(self) -> str:
        return f"review of {self.item} ({self.status})"


class ReviewEvent(models.Model):
    """The review log: every flag, decision and reopening, with who, when and what."""

    class Action(models.TextChoices):
        FLAG = "flag", "Flagged"
        DECIDE = "decide", "Decided"
        REOPEN = "reopen", "Reopened"

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="events")
    # None: an analysis (likely label errors, duplicates) flagged the item, not a person.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="review_events",
    )
    action = models.CharField(max_length=8, choices=Action)
    labels = models.JSONField(null=True, blank=True)
    chosen = models.CharField(
        max_length=160,
        blank=True,
        help_text='Where the decided label came from: "annotator:<name>", "model" or "new".',
    )
    candidates = models.JSONField(
        default=list, blank=True, help_text="The answers and model guess the reviewer saw."
    )
    comment = models.TextField(blank=True)
    client_uuid = models.UUIDField(unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.review.item_id}"


# The bulk actions' records live in their own module (this one stays under ~600 lines).
from annotations.action_models import DeletedItem, ItemAction, ItemRelabel  # noqa: E402, F401
from annotations.endpoint_models import PredictionEndpoint  # noqa: E402, F401
from annotations.preannotation_models import ItemVector, PreAnnotation  # noqa: E402, F401

# Webhooks: their own module too.
from annotations.webhooks.models import (  # noqa: E402, F401
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
