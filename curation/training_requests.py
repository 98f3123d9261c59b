"""Wake-up calls for the training worker. A request only says "look at this project": the
worker reads the labels from the database, so a request lost with Redis loses nothing.

Kept apart from `curation.worker` (which imports the trainer) so that the trainer's own
follow-up work, such as a weighted consensus that changed gold labels, can ask for a run too.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

TRAINING_CHANNEL = "training"


def send_to_worker(message: dict[str, Any]) -> bool:
    """Put `message` on the training channel; False (logged) when the channel layer is down."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.send)(TRAINING_CHANNEL, message)
    except Exception as exc:  # Redis down or channel full: the database still holds the truth.
        # One line, no traceback: during an outage every submission lands here.
        logger.warning(
            "%s for project %s not sent: %r", message["type"], message.get("project_id"), exc
        )
        return False
    return True


def training_request(project_id: int) -> dict[str, Any]:
    """The message that asks a worker to train `project_id`."""
    return {"type": "training.request", "project_id": int(project_id)}


def request_training(project_id: int) -> bool:
    """Ask a worker to train `project_id`; False (logged) when the channel layer is down."""
    return send_to_worker(training_request(project_id))


def request_training_on_commit(project_id: int) -> None:
    transaction.on_commit(lambda: request_training(project_id))
