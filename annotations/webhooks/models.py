"""The webhooks of a project, their outbox of deliveries and the log of every attempt.

Imported by `annotations.models`, so these are models of the `annotations` app like the others.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class WebhookEvent(models.TextChoices):
    """What a hook can subscribe to. `ping` is the test event, sent to one hook on request."""

    ANNOTATION_SAVED = "annotation.saved", "Annotation saved"
    ITEM_COMPLETED = "item.completed", "Item complete"
    REVIEW_DECIDED = "review.decided", "Review decided"
    MODEL_VERSION = "model.version_created", "New model version"
    DATASET_VERSION = "dataset_version.created", "Dataset version created"


PING = "ping"


class Webhook(models.Model):
    """A URL that hears about the project's `events`. The secret signs every delivery; it is
    kept as is (the worker needs it to sign) and shown to project admins only when it is made."""

    project = models.ForeignKey(
        "annotations.Project", on_delete=models.CASCADE, related_name="webhooks"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="The event types this hook receives.")
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one hook: the outbox row, pending until delivered or out of attempts.

    `next_attempt_at` is when a worker may take it: the backoff after a failure, and while a
    worker holds it, the end of its lease (a worker that dies mid-delivery leaves the row to
    the next one once the lease ends)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=40)
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The workers' claim: due pending rows, oldest first.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhookdelivery_due_idx",
            ),
            models.Index(fields=["webhook", "-created_at"], name="webhookdelivery_hook_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} {self.event_id} → {self.webhook_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: when, what came back, how long it took, what failed."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    url = models.CharField(max_length=2000, help_text="The last URL asked (after redirects).")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.delivery_id} at {self.started_at}: {self.status_code or self.error}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
