"""Serializers that only describe what an endpoint reads or answers, for the OpenAPI schema
(annotations/api/schema.py): the endpoints below build their answers from the services' dicts.
A key the service adds must be added here too, or the schema test's fuzzer will notice."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from annotations.api.serializers import ItemSerializer
from annotations.browse.query import _RANGES, FLAGS, MAX_LIMIT, SORTS, STATUSES
from annotations.models import GoldSource

JSON = serializers.JSONField  # a value whose shape varies (documented where it is produced)


def _strings(**kwargs) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), **kwargs)


# --- Token ------------------------------------------------------------------------------------


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as `Authorization: Token <token>`.")
    expiry = serializers.DateTimeField()


# --- Annotating -------------------------------------------------------------------------------


class NextItemsSerializer(serializers.Serializer):
    lease_seconds = serializers.IntegerField(help_text="How long the items stay yours.")
    results = ItemSerializer(many=True)


# --- Agreement and quality --------------------------------------------------------------------


class CohenKappaSerializer(serializers.Serializer):
    annotators = _strings()
    kappa = serializers.FloatField(allow_null=True)
    shared_items = serializers.IntegerField()


class CoefficientsSerializer(serializers.Serializer):
    items = serializers.IntegerField()
    annotators = _strings()
    classes = _strings()
    percent_agreement = serializers.FloatField(allow_null=True)
    fleiss_kappa = serializers.FloatField(allow_null=True)
    fleiss_items = serializers.IntegerField()
    krippendorff_alpha = serializers.FloatField(allow_null=True)
    cohen_kappa = CohenKappaSerializer(many=True)
    confusion = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        help_text="Answers of annotator A (rows) against annotator B (columns), per class.",
    )


class AgreementSerializer(serializers.Serializer):
    """Single-label projects: the coefficients at the top level. Multi-label: `per_class`."""

    annotations = serializers.IntegerField()
    items = serializers.IntegerField(required=False)
    annotators = _strings(required=False)
    classes = _strings(required=False)
    percent_agreement = serializers.FloatField(allow_null=True, required=False)
    fleiss_kappa = serializers.FloatField(allow_null=True, required=False)
    fleiss_items = serializers.IntegerField(required=False)
    krippendorff_alpha = serializers.FloatField(allow_null=True, required=False)
    cohen_kappa = CohenKappaSerializer(many=True, required=False)
    confusion = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()), required=False
    )
    per_class = serializers.DictField(child=CoefficientsSerializer(), required=False)


class QualitySerializer(serializers.Serializer):
    threshold = serializers.FloatField()
    min_items = serializers.IntegerField()
    agreement = AgreementSerializer()
    annotators = serializers.ListField(
        child=serializers.DictField(), help_text="One row per annotator (accuracy, agreement)."
    )
    below_threshold = _strings()
    gold = serializers.DictField(child=serializers.IntegerField(), help_text="Labels by source.")
    reviews = serializers.DictField(child=serializers.IntegerField(), help_text="By status.")


# --- Dataset versions -------------------------------------------------------------------------


class VersionSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    name = serializers.CharField()
    note = serializers.CharField(allow_blank=True)
    trigger = serializers.CharField(help_text="manual or auto")
    status = serializers.CharField(help_text="queued, building, ready or failed")
    error = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    content_hash = serializers.CharField(allow_blank=True)
    file_size = serializers.IntegerField(allow_null=True)
    items = serializers.IntegerField()
    labelled = serializers.IntegerField()
    answers = serializers.IntegerField()
    class_counts = serializers.DictField(child=serializers.IntegerField())
    split_counts = serializers.DictField()
    metrics_status = serializers.CharField()
    metrics = serializers.DictField()
    author = serializers.CharField(allow_null=True)
    accuracy_change = serializers.FloatField(allow_null=True)


class VersionDetailSerializer(VersionSerializer):
    split_rule = serializers.DictField()


class VersionDiffSerializer(serializers.Serializer):
    from_ = serializers.CharField()
    to = serializers.CharField()
    summary = serializers.DictField(child=serializers.IntegerField())
    pairs = serializers.ListField(child=serializers.DictField(), help_text="{from, to, items}")
    count = serializers.IntegerField()
    offset = serializers.IntegerField()
    next_offset = serializers.IntegerField(allow_null=True)
    changes = serializers.ListField(child=serializers.DictField())

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")  # a keyword in Python
        return fields


# --- Dashboard --------------------------------------------------------------------------------


class DashboardSerializer(serializers.Serializer):
    project_id = serializers.IntegerField()
    ready = serializers.BooleanField(help_text="False until the worker counted the project.")
    refreshed_at = serializers.DateTimeField(allow_null=True)
    progress = serializers.DictField()
    eta = JSON(help_text="Time to finish at the current pace.")
    throughput = serializers.DictField()
    model = serializers.DictField()
    gold = JSON()
    agreement = serializers.ListField(child=serializers.DictField())
    reviews = serializers.DictField(child=serializers.IntegerField())
    label_errors = serializers.IntegerField()
    duplicate_groups = serializers.IntegerField()
    versions = serializers.ListField(child=serializers.DictField())
    plots = _strings()


# --- Data browser -----------------------------------------------------------------------------


class _Gold(serializers.Serializer):
    labels = _strings(allow_null=True, help_text="null: a tie, until a reviewer decides.")
    source = serializers.CharField()
    agreement = serializers.FloatField(allow_null=True)


class _Prediction(serializers.Serializer):
    labels = _strings()
    confidence = serializers.FloatField(allow_null=True)
    version = serializers.IntegerField(allow_null=True)


class _LabelError(serializers.Serializer):
    score = serializers.FloatField()
    suggested = _strings(allow_null=True)
    status = serializers.CharField(allow_blank=True)


class DataRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    excerpt = serializers.CharField(allow_blank=True)
    has_image = serializers.BooleanField()
    status = serializers.CharField()
    gold = _Gold(allow_null=True)
    answers = serializers.IntegerField()
    prediction = _Prediction(allow_null=True)
    label_error = _LabelError(allow_null=True)
    duplicate_group = serializers.IntegerField(allow_null=True)
    outlier_score = serializers.FloatField(allow_null=True)
    metadata = serializers.DictField(help_text="The columns asked for with `cols`.")


class DataPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    count_exact = serializers.BooleanField(help_text="False: `count` is a lower bound.")
    query = serializers.CharField(allow_blank=True)
    next = serializers.URLField(allow_null=True)
    results = DataRowSerializer(many=True)


class _Event(serializers.Serializer):
    at = serializers.DateTimeField()
    who = serializers.CharField()
    what = serializers.CharField()
    labels = _strings(allow_null=True)
    previous = _strings(allow_null=True)
    note = serializers.CharField(allow_blank=True)


class DataItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    external_id = serializers.CharField()
    text = serializers.CharField(allow_blank=True)
    has_image = serializers.BooleanField()
    metadata = serializers.DictField()
    answers = serializers.ListField(child=serializers.DictField())
    gold = serializers.DictField(allow_null=True)
    history = _Event(many=True)
    review = serializers.DictField(allow_null=True)
    prediction = serializers.DictField(allow_null=True)
    prediction_changes = serializers.ListField(child=serializers.DictField())
    eval_sample = serializers.DictField(allow_null=True)
    label_issue = serializers.DictField(allow_null=True)
    duplicates = serializers.DictField(allow_null=True)
    neighbours = serializers.ListField(
        child=serializers.DictField(), allow_null=True, help_text="null: not computed yet."
    )
    outlier_score = serializers.FloatField(allow_null=True)
    relabels = serializers.ListField(child=serializers.DictField())


def _browse_parameters() -> list[OpenApiParameter]:
    """The data browser's filters (`annotations.browse.BrowseQuery`), shared by the data list
    and the selection export."""
    q = OpenApiParameter.QUERY
    text, number = OpenApiTypes.STR, OpenApiTypes.NUMBER
    params = [
        OpenApiParameter("q", text, q, description="Full-text search (PostgreSQL)."),
        OpenApiParameter("status", text, q, enum=list(STATUSES)),
        OpenApiParameter("gold", text, q, description="A label class name."),
        OpenApiParameter("gold_source", text, q, enum=list(GoldSource.values)),
        OpenApiParameter("annotator", text, q, description="A username who answered."),
        OpenApiParameter("predicted", text, q, description="A label class name."),
        OpenApiParameter("disagrees", OpenApiTypes.BOOL, q, description="Model ≠ gold."),
        OpenApiParameter("flag", text, q, enum=list(FLAGS)),
        OpenApiParameter("duplicates", OpenApiTypes.BOOL, q),
        OpenApiParameter("group", OpenApiTypes.INT, q, description="A duplicate group id."),
        OpenApiParameter(
            "meta",
            {"type": "array", "items": {"type": "string"}},
            q,
            description="`field=value`, repeatable.",
        ),
        OpenApiParameter("cols", text, q, description="Metadata fields to show, comma-separated."),
        OpenApiParameter(
            "sort", text, q, enum=[*SORTS, *(f"-{s}" for s in SORTS)], description="`-` descends."
        ),
    ]
    for name in _RANGES:
        params += [
            OpenApiParameter(f"{name}_min", number, q),
            OpenApiParameter(f"{name}_max", number, q),
        ]
    return params


BROWSE_FILTERS = _browse_parameters()
DATA_PAGE_PARAMETERS = [
    *BROWSE_FILTERS,
    OpenApiParameter(
        "limit", OpenApiTypes.INT, OpenApiParameter.QUERY, description=f"1–{MAX_LIMIT}"
    ),
    OpenApiParameter(
        "after", OpenApiTypes.STR, OpenApiParameter.QUERY, description="The `next` link's cursor."
    ),
]


# --- Bulk actions -----------------------------------------------------------------------------


class ItemActionResultSerializer(serializers.Serializer):
    id = serializers.IntegerField(required=False, help_text="The recorded action (not dry runs).")
    action = serializers.CharField()
    dry_run = serializers.BooleanField()
    count = serializers.IntegerField()
    done = serializers.IntegerField(required=False)
    skipped = serializers.IntegerField(required=False)
    notes = serializers.ListField(required=False)


class ItemActionSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    action = serializers.CharField()
    action_label = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    item_count = serializers.IntegerField()
    done_count = serializers.IntegerField()
    reason = serializers.CharField(allow_blank=True)
    reason_label = serializers.CharField(allow_blank=True)
    note = serializers.CharField(allow_blank=True)
    users = _strings()
    format = serializers.CharField(allow_blank=True)
    filter = serializers.CharField(allow_blank=True)
    picked = serializers.IntegerField(allow_null=True)
    browser_url = serializers.CharField(allow_null=True)


# --- Analyses and duplicates ------------------------------------------------------------------


class SentToReviewSerializer(serializers.Serializer):
    sent = serializers.IntegerField()
    external_ids = _strings()


class DuplicatesSentSerializer(serializers.Serializer):
    sent_to_review = serializers.IntegerField()
