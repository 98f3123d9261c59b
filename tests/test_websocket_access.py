"""An open project websocket stops hearing the project once its user loses access: removed from
the project, logged out, or (re-checked every few seconds) any other way; and a websocket to a
path that does not exist is refused cleanly."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.test import Client

from annotations.events import project_group, publish
from annotations.members import membership_remove, membership_set_role
from annotations.models import Membership
from tests.test_websocket import asgi_app, memory_layer  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords", "memory_layer"),
]


def logged_in_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def open_socket(app, project, client: Client) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ws = WebsocketCommunicator(
        app,
        f"/ws/projects/{project.pk}/",
        headers=[(b"origin", b"http://testserver"), (b"cookie", cookie)],
    )
    connected, _ = await ws.connect()
    assert connected
    return ws


async def send_progress(project, complete: int) -> None:
    event = {"type": "project.progress", "project_id": project.pk, "total": 20}
    await database_sync_to_async(publish)(project_group(project.pk), event | {"complete": complete})


async def assert_closed_without_events(ws: WebsocketCommunicator, project) -> None:
    """The socket was closed with "no access" and hears nothing more of the project."""
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    await send_progress(project, 7)
    assert await ws.receive_nothing(timeout=0.3)


async def test_a_removed_member_stops_hearing_the_project(asgi_app, project, annotator):  # noqa: F811
    ws = await open_socket(
        asgi_app, project, await database_sync_to_async(logged_in_client)(annotator)
    )
    await send_progress(project, 1)
    assert (await ws.receive_json_from(timeout=5))["complete"] == 1
    membership = await Membership.objects.aget(project=project, user=annotator)
    await database_sync_to_async(membership_remove)(membership=membership)
    await assert_closed_without_events(ws, project)


async def test_a_role_change_keeps_the_socket_open(asgi_app, project, annotator):  # noqa: F811
    ws = await open_socket(
        asgi_app, project, await database_sync_to_async(logged_in_client)(annotator)
    )
    membership = await Membership.objects.aget(project=project, user=annotator)
    await database_sync_to_async(membership_set_role)(
        membership=membership, role=Membership.Role.REVIEWER
    )
    await send_progress(project, 2)
    assert (await ws.receive_json_from(timeout=5))["complete"] == 2
    await ws.disconnect()


async def test_logging_out_closes_the_sockets_of_that_session_only(
    asgi_app,  # noqa: F811
    project,
    annotator,
):
    leaving = await database_sync_to_async(logged_in_client)(annotator)
    staying = await database_sync_to_async(logged_in_client)(annotator)  # another browser
    ws_leaving = await open_socket(asgi_app, project, leaving)
    ws_staying = await open_socket(asgi_app, project, staying)
    response = await database_sync_to_async(leaving.post)("/accounts/logout/")
    assert response.status_code == 302
    await assert_closed_without_events(ws_leaving, project)
    assert (await ws_staying.receive_json_from(timeout=5))["complete"] == 7
    await ws_staying.disconnect()


async def test_access_lost_any_other_way_is_noticed_at_the_next_event(
    asgi_app,  # noqa: F811
    project,
    annotator,
    settings,
):
    settings.WEBSOCKET_RECHECK_SECONDS = 0
    client = await database_sync_to_async(logged_in_client)(annotator)
    ws = await open_socket(asgi_app, project, client)
    # The session is deleted behind the app's back (expired and cleared, say): no message.
    await Session.objects.filter(session_key=client.session.session_key).adelete()
    await send_progress(project, 3)
    await assert_closed_without_events(ws, project)


async def test_a_membership_deleted_without_the_service_is_noticed_too(
    asgi_app,  # noqa: F811
    project,
    annotator,
    settings,
):
    settings.WEBSOCKET_RECHECK_SECONDS = 0
    ws = await open_socket(
        asgi_app, project, await database_sync_to_async(logged_in_client)(annotator)
    )
    await Membership.objects.filter(project=project, user=annotator).adelete()
    await send_progress(project, 4)
    await assert_closed_without_events(ws, project)


@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/projects/abc/", "/ws/projects/1/extra/"])
async def test_an_unknown_websocket_path_is_refused_without_a_traceback(
    asgi_app,  # noqa: F811
    path,
    caplog,
):
    ws = WebsocketCommunicator(asgi_app, path, headers=[(b"origin", b"http://testserver")])
    with caplog.at_level(logging.DEBUG):
        connected, code = await ws.connect()
    assert (connected, code) == (False, 4404)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
