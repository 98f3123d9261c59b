"""The project websocket: live progress and model updates for open pages."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from annotations import access
from annotations.events import project_group


class ProjectConsumer(AsyncJsonWebsocketConsumer):
    """Members of a project receive its events; anyone else is refused at connect."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        pk = self.scope["url_route"]["kwargs"]["pk"]
        try:
            self.project = await database_sync_to_async(access.get_project_for_user)(user, pk)
        except Http404:
            await self.close(code=4404)
            return
        self.group = project_group(self.project.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # The page only listens; nothing a client sends changes state here.
        return

    async def project_progress(self, event: dict) -> None:
        await self.send_json(
            {"type": "progress", "total": event["total"], "complete": event["complete"]}
        )

    async def model_updated(self, event: dict) -> None:
        """A new model version ranked the queue: the page shows its version and quality."""
        await self.send_json(
            {
                "type": "model",
                "version": event["version"],
                "labels_used": event["labels_used"],
                "since": event.get("since", 0),
                "estimated_accuracy": event.get("estimated_accuracy"),
                "cold": event.get("cold", False),
                "eval": event.get("eval") or {},
                "ranked": event.get("ranked", 0),
            }
        )
