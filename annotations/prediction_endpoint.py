"""A project's prediction endpoint: configure it, remove it, and record what the worker's calls
came to. The settings page, the API and the admin call these; the calls themselves are the
training worker's (`curation.endpoint_run`), never a web request's.

The URL is checked with the webhooks' SSRF rules (`annotations.webhooks.safety`) when it is
saved, and again at every call (a name may resolve elsewhere by then).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotations.endpoint_models import PredictionEndpoint
from annotations.models import Project
from annotations.outbound_http import backoff_seconds
from annotations.webhooks.safety import checked_url

__all__ = [
    "BATCH_MAX",
    "ENDPOINT_JOB",
    "TIMEOUT_MAX",
    "endpoint_caught_up",
    "endpoint_delete",
    "endpoint_failed",
    "endpoint_lease",
    "endpoint_release",
    "endpoint_of",
    "endpoint_save",
    "endpoint_set_enabled",
    "endpoint_succeeded",
    "endpoint_url_check",
]

#: The worker message that asks for a prediction run (`curation.endpoint_run`).
ENDPOINT_JOB = "training.endpoint"
BATCH_MAX = 512
TIMEOUT_MAX = 300


def endpoint_of(project: Project) -> PredictionEndpoint | None:
    return PredictionEndpoint.objects.filter(project=project).first()


def endpoint_url_check(url: str) -> str:
    """The URL, if the endpoint may be called there (scheme, length, and every address its host
    resolves to now); else a ValidationError on `url` that says why."""
    return checked_url(url, missing="Enter the URL of the prediction endpoint.")


def _bounded(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError({field: f"Use a whole number from {low} to {high}."})
    return value


def endpoint_save(
    *,
    project: Project,
    url: str,
    auth_header: str | None = None,
    batch_size: int = 32,
    timeout_seconds: int = 30,
    enabled: bool = True,
    rank_queue: bool = True,
    user=None,
) -> PredictionEndpoint:
    """Create or replace the project's endpoint settings. `auth_header`: None keeps the stored
    value, "" removes it. Saving clears the backoff and asks the worker to start at once."""
    url = endpoint_url_check(url)
    batch_size = _bounded(batch_size, "batch_size", 1, BATCH_MAX)
    timeout_seconds = _bounded(timeout_seconds, "timeout_seconds", 1, TIMEOUT_MAX)
    if auth_header is not None:
        auth_header = auth_header.strip()
        if len(auth_header) > 2000 or any(c in auth_header for c in "\r\n\0"):
            raise ValidationError(
                {"auth_header": "Give one line of at most 2,000 characters (no line breaks)."}
            )
    with transaction.atomic():
        endpoint = PredictionEndpoint.objects.select_for_update().filter(project=project).first()
        if endpoint is None:
            endpoint = PredictionEndpoint(project=project, created_by=user)
        endpoint.url = url
        if auth_header is not None:
            endpoint.auth_header = auth_header
        endpoint.batch_size = batch_size
        endpoint.timeout_seconds = timeout_seconds
        endpoint.enabled = bool(enabled)
        endpoint.rank_queue = bool(rank_queue)
        # Whoever saves has likely fixed what failed (URL, token, server): try again now.
        endpoint.consecutive_failures = 0
        endpoint.next_attempt_at = None
        endpoint.caught_up_items = None
        endpoint.save()
        if endpoint.enabled:
            _wake_on_commit(project.pk)
        else:
            # The trainer ranks again by its own model (`curation.trainer`).
            from curation.training_requests import request_training_on_commit

            request_training_on_commit(project.pk)
    return endpoint


def endpoint_set_enabled(endpoint: PredictionEndpoint, enabled: bool) -> PredictionEndpoint:
    """Enable (the URL checked again) or disable the endpoint, keeping its other settings."""
    if not enabled:
        from curation.training_requests import request_training_on_commit

        with transaction.atomic():
            PredictionEndpoint.objects.filter(pk=endpoint.pk).update(
                enabled=False, updated_at=timezone.now()
            )
            request_training_on_commit(endpoint.project_id)
        endpoint.refresh_from_db()
        return endpoint
    return endpoint_save(
        project=endpoint.project,
        url=endpoint.url,
        batch_size=endpoint.batch_size,
        timeout_seconds=endpoint.timeout_seconds,
        enabled=True,
        rank_queue=endpoint.rank_queue,
    )


def endpoint_delete(project: Project) -> bool:
    """Remove the project's endpoint (its predictions stay, as imported ones do); the queue is
    ranked by our model again from the next training run, which this asks for."""
    from curation.training_requests import request_training_on_commit

    with transaction.atomic():
        deleted, _ = PredictionEndpoint.objects.filter(project=project).delete()
        if deleted:
            request_training_on_commit(project.pk)
    return bool(deleted)


def endpoint_succeeded(
    endpoint: PredictionEndpoint,
    *,
    items: int,
    model_version: str,
    latency_ms: int,
    now: datetime | None = None,
) -> None:
    """Record a batch stored: the failures in a row and the backoff end."""
    now = now or timezone.now()
    PredictionEndpoint.objects.filter(pk=endpoint.pk).update(
        last_call_at=now,
        last_success_at=now,
        last_latency_ms=latency_ms,
        model_version=model_version,
        items_predicted=F("items_predicted") + items,
        consecutive_failures=0,
        next_attempt_at=None,
    )
    endpoint.refresh_from_db()


def endpoint_lease(endpoint: PredictionEndpoint, *, now: datetime, renew: bool = False) -> bool:
    """Take (or, with `renew`, extend) the endpoint for one worker's run: longer than a batch
    can take. False when another worker's run holds it: two workers never ask for the same
    items at once, and a worker that died leaves it free once its lease ends."""
    until = now + timedelta(seconds=endpoint.timeout_seconds + 60)
    rows = PredictionEndpoint.objects.filter(pk=endpoint.pk)
    if not renew:
        rows = rows.filter(Q(leased_until__isnull=True) | Q(leased_until__lte=now))
    return rows.update(leased_until=until) == 1


def endpoint_release(endpoint: PredictionEndpoint) -> None:
    PredictionEndpoint.objects.filter(pk=endpoint.pk).update(leased_until=None)


def endpoint_caught_up(endpoint: PredictionEndpoint, *, item_count: int | None) -> None:
    """Record that a run found every item predicted while the project had `item_count` items
    (None: items are left for the next run)."""
    PredictionEndpoint.objects.filter(pk=endpoint.pk).update(caught_up_items=item_count)
    endpoint.caught_up_items = item_count


def endpoint_failed(
    endpoint: PredictionEndpoint,
    *,
    error: str,
    latency_ms: int | None = None,
    now: datetime | None = None,
) -> None:
    """Record a refused or failed call: the error, and no call before the backoff ends (30 s,
    60 s, … at most 6 h, as webhooks)."""
    now = now or timezone.now()
    failures = endpoint.consecutive_failures + 1
    PredictionEndpoint.objects.filter(pk=endpoint.pk).update(
        last_call_at=now,
        last_error=error[:500],
        last_error_at=now,
        last_latency_ms=latency_ms,
        consecutive_failures=failures,
        next_attempt_at=now + timedelta(seconds=backoff_seconds(failures)),
    )
    endpoint.refresh_from_db()


def _wake_on_commit(project_id: int) -> None:
    from curation.training_requests import send_to_worker

    transaction.on_commit(lambda: send_to_worker({"type": ENDPOINT_JOB, "project_id": project_id}))
