"""A project's prediction endpoint: a team's own model server that the training worker asks for
class probabilities (`curation.endpoint_run`), and what the last calls came to.

Imported by `annotations.models`, so this is a model of the `annotations` app like the others.
`annotations.prediction_endpoint` makes every change.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import models

#: Prefix of the model name its predictions are stored under (`PreAnnotation.model_name`).
ENDPOINT_MODEL_PREFIX = "endpoint:"
#: `PreAnnotation.model_name`'s length.
MODEL_NAME_MAX = 200


class PredictionEndpoint(models.Model):
    """Where to ask, how, and the status of the calls so far. The auth header's value is kept
    as is (the worker sends it) and never shown back in full."""

    project = models.OneToOneField(
        "annotations.Project", on_delete=models.CASCADE, related_name="prediction_endpoint"
    )
    url = models.URLField(max_length=2000)
    auth_header = models.CharField(
        max_length=2000, blank=True, help_text="Sent as the Authorization header's value."
    )
    batch_size = models.PositiveIntegerField(default=32)
    timeout_seconds = models.PositiveIntegerField(default=30)
    enabled = models.BooleanField(default=True)
    rank_queue = models.BooleanField(
        default=True, help_text="Rank the queue by the endpoint's probabilities while enabled."
    )
    # Status, written by the worker.
    model_version = models.CharField(max_length=200, blank=True, editable=False)
    last_call_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True, editable=False)
    items_predicted = models.PositiveBigIntegerField(default=0, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    leased_until = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="A worker's run holds the endpoint until then (renewed each batch).",
    )
    caught_up_items = models.PositiveIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="The project's item count when a run last found every item predicted; "
        "empty while items wait (the worker's cheap test for a run to do).",
    )
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="No call before then (the backoff)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "endpoint"

    def model_name(self, model_version: str | None = None) -> str:
        """The model name its predictions are stored under: the version it reports, else its
        host."""
        version = self.model_version if model_version is None else model_version
        name = ENDPOINT_MODEL_PREFIX + (version or self.host)
        return name[:MODEL_NAME_MAX]

    @property
    def auth_header_hint(self) -> str:
        """What the pages show of the auth header: whether there is one and its last characters."""
        value = self.auth_header
        if not value:
            return ""
        return "…" + value[-4:] if len(value) >= 12 else "set"
