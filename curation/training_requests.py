"""Wake-up calls for the training worker. A request only says "look at this project": the
worker reads the labels from the database, so a request lost with Redis loses nothing.

Kept apart from `curation.worker` (which imports the trainer) so that the trainer's own
follow-up work, such as a weighted consensus that changed gold labels, can ask for a run too.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

TRAINING_CHANNEL = "training"


def request_training(project_id: int) -> bool:
    """Ask a worker to train `project_id`; False (logged) when the channel layer is down."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        async_to_sync(layer.send)(
            TRAINING_CHANNEL, {"type": "training.request", "project_id": int(project_id)}
        )
    except Exception:  # Redis down or channel full: the database still holds the label.
        logger.warning("training request for project %s not sent", project_id, exc_info=True)
        return False
    return True


def request_training_on_commit(project_id: int) -> None:
    transaction.on_commit(lambda: request_training(project_id))
