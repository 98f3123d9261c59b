"""The training worker: a Channels consumer on the `training` channel.

An annotation that commits sends `{"type": "training.request", "project_id": …}` to the channel
(`request_training_on_commit`). Whichever worker receives it runs `curation.trainer.train` in a
thread, which reads every label from the database under the project's row lock, so:

- the event is only a wake-up call: one lost (Redis down, worker down, server restarted) delays
  training until the next label, the next sweep or the next heartbeat of an open annotate page,
  never loses a label;
- any number of workers can listen (`manage.py runworker training`): one project trains in one
  place at a time, and a burst of events for one project costs one training plus cheap checks.

Every `SWEEP_SECONDS` a worker also trains the projects with labels their model has not seen.

Embedded mode (`TRAINING_WORKER=embedded`, the default without Redis): `EmbeddedTrainingWorker`
wraps the ASGI application and starts a Channels `Worker` for the training channel on the
server's own event loop at the first request, so the in-memory channel layer (one process) and
the demo need no other service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer
from channels.worker import Worker
from django.conf import settings
from django.db import close_old_connections
from threadpoolctl import threadpool_limits

from curation import services, trainer
from curation.training_requests import (
    TRAINING_CHANNEL,
    request_training,
    request_training_on_commit,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TRAINING_CHANNEL",
    "EmbeddedTrainingWorker",
    "TrainingConsumer",
    "request_training",
    "request_training_on_commit",
]

#: How often a worker looks for projects whose model lags behind their labels.
SWEEP_SECONDS = 30.0

_last_sweep = 0.0
_blas_limited = False
_sweep_lock = threading.Lock()


def _one_blas_thread() -> None:
    """Training refits small models many times; BLAS thread pools only add contention there
    (digits refits took 243 ms instead of 21 ms per label on a busy 2-core machine)."""
    global _blas_limited
    if not _blas_limited:
        threadpool_limits(1)
        _blas_limited = True


def handle_request(project_id: int) -> trainer.TrainingResult | None:
    """Train one project, then sweep for stale ones if it is time; never raises."""
    _one_blas_thread()
    close_old_connections()
    try:
        return trainer.train(project_id)
    except Exception:
        logger.exception("training project %s failed", project_id)
        return None
    finally:
        _maybe_sweep()
        close_old_connections()


def sweep() -> list[int]:
    """Train every project whose model has not seen all its labels; return their ids."""
    trained = []
    for project_id in services.stale_projects():
        try:
            if trainer.train(project_id) is not None:
                trained.append(project_id)
        except Exception:
            logger.exception("training project %s failed", project_id)
    return trained


def _maybe_sweep() -> None:
    global _last_sweep
    with _sweep_lock:
        if time.monotonic() - _last_sweep < SWEEP_SECONDS:
            return
        _last_sweep = time.monotonic()
    try:
        sweep()
    except Exception:
        logger.exception("sweep for stale projects failed")


class TrainingConsumer(AsyncConsumer):
    """Runs each request in a worker thread, so the event loop (in embedded mode, the web
    server's) keeps serving while a model trains; requests are handled one after another."""

    async def training_request(self, message: dict[str, Any]) -> None:
        await sync_to_async(handle_request, thread_sensitive=False)(message["project_id"])

    async def training_sweep(self, message: dict[str, Any]) -> None:
        await sync_to_async(_sweep_now, thread_sensitive=False)()


def _sweep_now() -> None:
    close_old_connections()
    try:
        sweep()
    finally:
        close_old_connections()


class EmbeddedTrainingWorker:
    """ASGI wrapper that runs the training worker inside the server process (embedded mode).

    The worker must share the server's event loop, because the in-memory channel layer's
    queues belong to it; so it is started from the first ASGI call (lifespan startup under
    uvicorn, the first request under daphne/runserver). It sweeps for stale projects at once.
    """

    def __init__(self, application: Any, channel_application: Any) -> None:
        self.application = application
        self.channel_application = channel_application
        self.task: asyncio.Task | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            self.task is None
            and scope["type"] != "channel"  # a runworker process is a worker already
            and settings.TRAINING_WORKER == "embedded"
        ):
            self.start()
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.application(scope, receive, send)

    def start(self) -> None:
        layer = get_channel_layer()
        worker = Worker(self.channel_application, [TRAINING_CHANNEL], layer)
        self.task = asyncio.get_running_loop().create_task(worker.arun())
        self.task.add_done_callback(_log_exit)
        self.task_sweep = asyncio.get_running_loop().create_task(
            layer.send(TRAINING_CHANNEL, {"type": "training.sweep"})
        )

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.task is not None:
                    self.task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _log_exit(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded training worker stopped", exc_info=task.exception())
