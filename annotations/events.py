"""Publishing to the channel layer. Events are wake-up calls sent after commit; the database
stays the source of truth, so a lost event only delays, never loses, anything."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils.crypto import salted_hmac

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


def _progress_event(
    project_id: int, item_id: int, counts: tuple[int, int] | None
) -> ProgressEvent | None:
    """The progress event; `counts` (total, complete) as the committed transaction wrote them,
    else read now (None: the project is gone)."""
    if counts is None:
        from annotations.models import Project

        counts = (
            Project.objects.filter(pk=project_id)
            .values_list("item_count", "complete_count")
            .first()
        )
        if counts is None:
            return None
    return {
        "type": "project.progress",
        "project_id": project_id,
        "total": counts[0],
        "complete": counts[1],
        "item_id": item_id,
    }


def publish_progress_on_commit(
    project_id: int, item_id: int, *, counts: tuple[int, int] | None = None
) -> None:
    """After commit, tell the project's open pages the new progress (one read, not one per
    listener). `counts`: the project's (total, complete) as the committing transaction wrote
    them, when it has them: then nothing is read."""

    def send() -> None:
        event = _progress_event(project_id, item_id, counts)
        if event is not None:
            publish(project_group(project_id), dict(event))

    transaction.on_commit(send)


def publish_answer_on_commit(
    project_id: int, item_id: int, *, counts: tuple[int, int] | None = None
) -> None:
    """After an answer commits: the progress event to the project's pages and a training
    request to the worker, sent side by side in one hop to the event loop (this runs on every
    submission; two `async_to_sync` calls cost two thread switches and two Redis waits)."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        event = _progress_event(project_id, item_id, counts)
        try:
            outcomes = async_to_sync(_send_answer)(layer, project_id, event)
        except Exception:  # e.g. called under a running event loop: the DB has it all
            logger.warning("events for project %s not sent", project_id, exc_info=True)
            return
        for outcome, what in zip(outcomes, ("training request", "progress event"), strict=False):
            if isinstance(outcome, Exception):  # Redis down or channel full: the DB has it all
                logger.warning("%s for project %s not sent: %r", what, project_id, outcome)

    transaction.on_commit(send)


async def _send_answer(layer: Any, project_id: int, event: ProgressEvent | None) -> list:
    """The training request and the progress event, side by side; exceptions are returned."""
    from curation.training_requests import TRAINING_CHANNEL, training_request

    sends = [layer.send(TRAINING_CHANNEL, training_request(project_id))]
    if event is not None:
        sends.append(layer.group_send(project_group(project_id), dict(event)))
    return await asyncio.gather(*sends, return_exceptions=True)


# --- Access changes, for the sockets of one user ------------------------------------------------


def user_group(user_id: int) -> str:
    """Every open socket of a user, whatever the project: told when their access changes."""
    return f"user-{user_id}"


class AccessChangedEvent(TypedDict):
    type: str  # "access.changed"
    project_id: int


class SessionEndedEvent(TypedDict):
    type: str  # "session.ended"
    session: str  # session_fingerprint() of the session that ended


def session_fingerprint(session_key: str | None) -> str:
    """Names a session in channel messages without sending its key (a credential) to Redis."""
    return salted_hmac("annotations.events.session", session_key or "").hexdigest()


def publish_access_changed_on_commit(*, user_id: int, project_id: int) -> None:
    """After commit, have the user's sockets on the project check whether they may still
    listen (a membership removed or changed)."""
    event: AccessChangedEvent = {"type": "access.changed", "project_id": project_id}
    publish_on_commit(user_group(user_id), dict(event))


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    """`user_logged_out` receiver: the sockets opened with the ending session close at once
    (a transport concern, so a signal: every way of logging out sends it)."""
    session = getattr(request, "session", None)
    if user is None or session is None or not session.session_key:
        return
    event: SessionEndedEvent = {
        "type": "session.ended",
        "session": session_fingerprint(session.session_key),
    }
    publish(user_group(user.pk), dict(event))
