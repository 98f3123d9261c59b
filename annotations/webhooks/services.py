"""Managing a project's webhooks: add, change, rotate the secret, enable or disable, delete,
send a test event, redeliver. The page, the API and the admin all call these.

Every change recomputes `Project.webhook_events` (`_refresh_project_events`), the flag that
lets a change with no listening hook skip the outbox without a query.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotations.models import Project
from annotations.webhooks.events import envelope, wake_deliverer_on_commit
from annotations.webhooks.models import PING, Webhook, WebhookDelivery, WebhookEvent
from annotations.webhooks.safety import checked_url

#: Hooks per project.
MAX_HOOKS = 20
EVENT_NAMES = tuple(WebhookEvent.values)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _clean_events(events: Iterable[str]) -> list[str]:
    if isinstance(events, str) or not all(isinstance(e, str) for e in events):
        raise ValidationError({"events": "Events must be a list of event names."})
    chosen = set(events)
    unknown = sorted(chosen - set(EVENT_NAMES))
    if unknown:
        raise ValidationError(
            {
                "events": f"Unknown event(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(EVENT_NAMES)}."
            }
        )
    if not chosen:
        raise ValidationError({"events": "Choose at least one event."})
    return [e for e in EVENT_NAMES if e in chosen]


def webhook_url_check(url: str) -> str:
    """The URL, if a hook may be registered for it (scheme, length, and every address its host
    resolves to now); else a ValidationError on `url` that says why."""
    return checked_url(url, missing="Enter the URL to send events to.")


def _refresh_project_events(project_id: int) -> list[str]:
    """Recompute the project's `webhook_events` from its active hooks, under the project's row
    lock so two hook changes at once cannot leave a stale union behind."""
    Project.objects.select_for_update(no_key=True).filter(pk=project_id).values_list(
        "pk", flat=True
    ).first()
    listened: set[str] = set()
    for events in Webhook.objects.filter(project_id=project_id, active=True).values_list(
        "events", flat=True
    ):
        listened.update(events or ())
    flags = [e for e in EVENT_NAMES if e in listened]
    Project.objects.filter(pk=project_id).update(webhook_events=flags)
    return flags


def webhook_create(
    *, project: Project, url: str, events: Sequence[str], description: str = "", user=None
) -> Webhook:
    """A new active hook with a fresh secret (returned on the object: shown once)."""
    url = webhook_url_check(url)
    events = _clean_events(events)
    with transaction.atomic():
        if Webhook.objects.filter(project=project).count() >= MAX_HOOKS:
            raise ValidationError(f"A project has at most {MAX_HOOKS} webhooks.")
        hook = Webhook.objects.create(
            project=project,
            url=url,
            events=events,
            description=(description or "").strip()[:200],
            secret=new_secret(),
            created_by=user,
        )
        project.webhook_events = _refresh_project_events(project.pk)
    return hook


def webhook_update(
    hook: Webhook,
    *,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> Webhook:
    """Change what was given. Enabling a hook clears its failure count and lets its pending
    deliveries go again."""
    fields: list[str] = []
    if url is not None and url != hook.url:
        hook.url = webhook_url_check(url)
        fields.append("url")
    if events is not None:
        hook.events = _clean_events(events)
        fields.append("events")
    if description is not None:
        hook.description = description.strip()[:200]
        fields.append("description")
    if active is not None and active != hook.active:
        hook.active = active
        hook.consecutive_failures = 0
        hook.disabled_reason = "" if active else "Disabled by a project admin."
        fields += ["active", "consecutive_failures", "disabled_reason"]
    if not fields:
        return hook
    with transaction.atomic():
        hook.save(update_fields=[*fields, "updated_at"])
        _refresh_project_events(hook.project_id)
        if active:
            WebhookDelivery.objects.filter(
                webhook=hook, status=WebhookDelivery.Status.PENDING
            ).update(next_attempt_at=timezone.now())
            wake_deliverer_on_commit()
    return hook


def webhook_rotate_secret(hook: Webhook) -> str:
    """A new secret for the hook, used from the next attempt on; returned to be shown once."""
    hook.secret = new_secret()
    hook.save(update_fields=["secret", "updated_at"])
    return hook.secret


def webhook_delete(hook: Webhook) -> None:
    """Delete the hook with its deliveries and their log."""
    with transaction.atomic():
        project_id = hook.project_id
        hook.delete()
        _refresh_project_events(project_id)


def webhook_disable(hook_id: int, reason: str) -> None:
    """Stop a hook (the worker calls this after too many failures in a row)."""
    with transaction.atomic():
        project_id = (
            Webhook.objects.filter(pk=hook_id, active=True)
            .values_list("project_id", flat=True)
            .first()
        )
        if project_id is None:
            return
        Webhook.objects.filter(pk=hook_id).update(
            active=False, disabled_reason=reason[:500], updated_at=timezone.now()
        )
        _refresh_project_events(project_id)


def webhook_ping(hook: Webhook) -> WebhookDelivery:
    """Queue a test event (`ping`) for this hook alone, active or not: it goes even to a
    disabled hook, so an admin can check a fixed receiver before enabling it again."""
    event_id = uuid.uuid4()
    body = envelope(
        hook.project,
        PING,
        {"webhook": {"id": hook.pk, "url": hook.url, "events": hook.events}},
        event_id=event_id,
    )
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            webhook=hook,
            event=PING,
            event_id=event_id,
            payload=body,
            next_attempt_at=timezone.now(),
        )
        wake_deliverer_on_commit()
    return delivery


def delivery_redeliver(delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (same event id and body, new attempts), whatever its state."""
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now()
        )
        wake_deliverer_on_commit()
    delivery.refresh_from_db()
    return delivery


def hooks_of(project: Project) -> QuerySet[Webhook]:
    return Webhook.objects.filter(project=project).order_by("id")


def deliveries_of(hook: Webhook, *, limit: int = 50) -> list[WebhookDelivery]:
    """The hook's newest deliveries with their attempt log."""
    return list(
        WebhookDelivery.objects.filter(webhook=hook)
        .order_by("-created_at", "-id")
        .prefetch_related("attempt_log")[:limit]
    )
