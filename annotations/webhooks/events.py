"""Putting events in the webhook outbox, from inside the transaction of the change.

`webhook_event` is called by the services that make the changes (a submission, a review
decision, a model version, a dataset version) inside their transaction, so the outbox row
commits or rolls back with the change. When no active hook of the project listens to the event
it returns before any query: `Project.webhook_events` rides along with the project row the
caller has loaded already (the submission's latency is a measured target).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotations.webhooks.models import Webhook, WebhookDelivery

#: The message that wakes a worker to deliver (`curation.worker`).
DELIVER = "training.webhooks"


def envelope(project, event: str, data: dict[str, Any], *, event_id: uuid.UUID) -> dict:
    """The JSON body every delivery carries (docs/webhooks.md)."""
    return {
        "id": str(event_id),
        "type": event,
        "created_at": timezone.now().isoformat(),
        "project": {"id": project.pk, "name": project.name},
        "data": data,
    }


def webhook_event(project, event: str, data: Callable[[], dict[str, Any]]) -> int:
    """Queue `event` for every active hook of `project` that listens to it; returns how many.

    Call it inside the transaction of the change. `data` builds the payload; it is called only
    when some hook listens (so building it never costs the hot path)."""
    if event not in (project.webhook_events or ()):
        return 0
    hooks = [
        pk
        for pk, events in Webhook.objects.filter(project_id=project.pk, active=True).values_list(
            "pk", "events"
        )
        if event in (events or ())
    ]
    if not hooks:  # the flag was stale (a hook was disabled meanwhile)
        return 0
    event_id = uuid.uuid4()
    body = envelope(project, event, data(), event_id=event_id)
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook_id=pk, event=event, event_id=event_id, payload=body, next_attempt_at=now
            )
            for pk in hooks
        ]
    )
    wake_deliverer_on_commit()
    return len(hooks)


def wake_deliverer_on_commit() -> None:
    """Tell a worker there is something to deliver, once the rows are committed (a wake-up
    call: a lost one only waits for the next poll, `WEBHOOKS_POLL_SECONDS`)."""
    from curation.training_requests import send_to_worker

    transaction.on_commit(lambda: send_to_worker({"type": DELIVER}))


# --- Payloads -----------------------------------------------------------------------------------


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


def annotation_data(annotation, item, annotator, *, created: bool) -> dict[str, Any]:
    return {
        "annotation": {
            "id": annotation.pk,
            "item_id": item.pk,
            "external_id": item.external_id,
            "annotator": _username(annotator),
            "labels": list(annotation.labels),
            "skipped": annotation.skipped,
            "new": created,
            "time_spent_ms": annotation.time_spent_ms,
        }
    }


def item_completed_data(item, *, answers: list[list[str]], progress) -> dict[str, Any]:
    """The item's answers (labels, non-skipped) and its gold label as stored at completion
    (a reviewer may change it later: `review.decided`)."""
    from annotations.models import GoldLabel

    total, complete = progress if progress is not None else (None, None)
    gold = GoldLabel.objects.filter(item_id=item.pk).values("labels", "source", "agreement").first()
    return {
        "item": {
            "id": item.pk,
            "external_id": item.external_id,
            "answers": answers,
            "gold": gold,
        },
        "progress": {"items": total, "complete": complete},
    }


def review_decided_data(review, reviewer) -> dict[str, Any]:
    from annotations.models import Item

    external_id = Item.objects.filter(pk=review.item_id).values_list("external_id", flat=True)
    return {
        "review": {
            "id": review.pk,
            "item_id": review.item_id,
            "external_id": external_id.first(),
            "labels": list(review.labels or []),
            "decided_by": _username(reviewer),
            "decided_at": review.decided_at.isoformat() if review.decided_at else None,
            "comment": review.comment,
        }
    }


def model_version_data(version) -> dict[str, Any]:
    metrics = version.metrics or {}
    return {
        "model_version": {
            "version": version.version,
            "labels_used": version.labels_used,
            "class_balance": version.class_balance,
            "estimated_accuracy": version.estimated_accuracy,
            "evaluation": metrics.get("eval"),
            "strategy": version.strategy,
            "trained_at": version.trained_at.isoformat(),
        }
    }


def dataset_version_data(version, fields: dict[str, Any]) -> dict[str, Any]:
    """`fields`: the counts just written to the row (`curation.dataset_versions`)."""
    return {
        "dataset_version": {
            "number": version.number,
            "name": version.name,
            "note": version.note,
            "trigger": version.trigger,
            "author": _username(version.author) if version.author_id else None,
            "content_hash": fields["content_hash"],
            "items": fields["items"],
            "labelled": fields["labelled"],
            "answers": fields["answers"],
            "class_counts": fields["class_counts"],
            "split_counts": fields["split_counts"],
        }
    }
