"""Publishing to the channel layer. Events are wake-up calls sent after commit; the database
stays the source of truth, so a lost event only delays, never loses, anything."""

from __future__ import annotations

import logging
from typing import TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)


class ProgressEvent(TypedDict):
    type: str  # "project.progress"
    project_id: int
    total: int
    complete: int
    item_id: int  # the item whose answer triggered this


def project_group(project_id: int) -> str:
    return f"project-{project_id}"


def publish(group: str, message: dict) -> None:
    """Send now; a channel layer that is down is logged, never raised into the caller."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # Redis down: the DB already holds the truth.
        logger.warning("channel layer unavailable; event for %s dropped", group, exc_info=True)


def publish_on_commit(group: str, message: dict) -> None:
    transaction.on_commit(lambda: publish(group, message))


def publish_progress_on_commit(project_id: int, item_id: int) -> None:
    """After commit, tell the project's open pages the new progress (one read, not one per
    listener)."""

    def send() -> None:
        from annotations.models import Project

        counts = Project.objects.filter(pk=project_id).values("item_count", "complete_count")
        row = counts.first()
        if row is None:
            return
        event: ProgressEvent = {
            "type": "project.progress",
            "project_id": project_id,
            "total": row["item_count"],
            "complete": row["complete_count"],
            "item_id": item_id,
        }
        publish(project_group(project_id), dict(event))

    transaction.on_commit(send)
