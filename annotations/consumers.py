"""The project websocket: live progress and model updates for open pages."""

from __future__ import annotations

import time
from importlib import import_module

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404

from annotations import access
from annotations.events import project_group, session_fingerprint, user_group

#: Close code for "no access": the page does not reconnect (static/js/annotate.js).
NO_ACCESS = 4404


class ProjectConsumer(AsyncJsonWebsocketConsumer):
    """Members of a project receive its events; anyone else is refused at connect.

    Access is not settled for good at connect: the socket closes when the membership is removed
    or the session logs out (messages to the user's group), and before passing on an event it
    re-checks the session and the membership, at most every WEBSOCKET_RECHECK_SECONDS, which
    catches every other way of losing access (a session that expired or was deleted, a password
    change, a deactivated account, a project deleted).
    """

    groups_joined: list[str] = []

    async def connect(self) -> None:
        user = self.scope.get("user")
        pk = self.scope["url_route"]["kwargs"]["pk"]
        try:
            self.project = await database_sync_to_async(access.get_project_for_user)(user, pk)
        except Http404:
            await self.close(code=NO_ACCESS)
            return
        self.user_id = user.pk
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        self.checked_at = time.monotonic()
        self.groups_joined = [project_group(self.project.pk), user_group(user.pk)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined = []

    async def receive_json(self, content, **kwargs) -> None:
        # The page only listens; nothing a client sends changes state here.
        return

    async def access_changed(self, event: dict) -> None:
        """The user's membership of some project changed: re-check now if it is this one."""
        if event.get("project_id") == self.project.pk:
            await self._allowed(now=True)

    async def session_ended(self, event: dict) -> None:
        if self.session_key and event.get("session") == session_fingerprint(self.session_key):
            await self._revoke()

    async def project_progress(self, event: dict) -> None:
        if not await self._allowed():
            return
        await self.send_json(
            {"type": "progress", "total": event["total"], "complete": event["complete"]}
        )

    async def model_updated(self, event: dict) -> None:
        """A new model version ranked the queue: the page shows its version and quality."""
        if not await self._allowed():
            return
        await self.send_json(
            {
                "type": "model",
                "version": event["version"],
                "labels_used": event["labels_used"],
                "since": event.get("since", 0),
                "estimated_accuracy": event.get("estimated_accuracy"),
                "cold": event.get("cold", False),
                "ranking": event.get("ranking", not event.get("cold", False)),
                "needs": event.get("needs") or [],
                "eval": event.get("eval") or {},
                "ranked": event.get("ranked", 0),
            }
        )

    async def analysis_progress(self, event: dict) -> None:
        """A data analysis (label errors, duplicates…) moved on: the data page shows it."""
        if not await self._allowed():
            return
        await self.send_json(
            {
                "type": "analysis",
                "run": event["run"],
                "kind": event["kind"],
                "status": event["status"],
                "progress": event["progress"],
                "message": event.get("message", ""),
            }
        )

    async def _allowed(self, *, now: bool = False) -> bool:
        """Whether the socket may still hear the project; closes it if not. Checked against
        the database at most every WEBSOCKET_RECHECK_SECONDS, unless `now`."""
        if not self.groups_joined:
            return False  # closing
        interval = settings.WEBSOCKET_RECHECK_SECONDS
        if not now and time.monotonic() - self.checked_at < interval:
            return True
        self.checked_at = time.monotonic()
        if await self._still_member():
            return True
        await self._revoke()
        return False

    async def _still_member(self) -> bool:
        if not self.session_key:
            return False
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        user = await get_user({"session": store})  # the session is live and still theirs
        if not user.is_authenticated or user.pk != self.user_id:
            return False
        try:  # the same rule as every page: access.get_project_for_user
            await database_sync_to_async(access.get_project_for_user)(user, self.project.pk)
        except Http404:
            return False
        return True

    async def _revoke(self) -> None:
        await self.disconnect(NO_ACCESS)
        await self.close(code=NO_ACCESS)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other websocket path: refuse the handshake (the server answers 403) instead of the
    router's "No route found" exception and traceback."""

    async def connect(self) -> None:
        await self.close(code=NO_ACCESS)
