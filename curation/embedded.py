"""The training worker inside the server process (embedded mode), and the training channel's
ASGI application, without loading the training machinery until it is needed.

Every server process builds these (`dataprep_site.asgi`); with an external training worker
(`TRAINING_WORKER=external`, production) a server never trains, so it never imports
`curation.worker` and the numerical libraries behind it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from curation.training_requests import TRAINING_CHANNEL

__all__ = ["EmbeddedTrainingWorker", "LazyTrainingApplication"]


class LazyTrainingApplication:
    """`curation.worker.training_application()`, built at the first message on the channel."""

    def __init__(self) -> None:
        self.application: Any = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.application is None:
            from curation.worker import training_application

            self.application = training_application()
        await self.application(scope, receive, send)


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
        from curation.worker import TrainingWorker, log_exit

        worker = TrainingWorker(self.channel_application, [TRAINING_CHANNEL], get_channel_layer())
        self.task = asyncio.get_running_loop().create_task(worker.arun())
        self.task.add_done_callback(log_exit)

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
