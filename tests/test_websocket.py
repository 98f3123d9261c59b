"""The project websocket through the real ASGI application: origin check, session login,
membership, and progress events after a submission (in-memory layer, and Redis)."""

from __future__ import annotations

import importlib
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from annotations.models import Item
from dataprep_site.env import channel_layers_for
from tests import service_env
from tests.conftest import submit_handed_out

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


@pytest.fixture
def asgi_app(settings):
    """The site's ASGI application, built with ALLOWED_HOSTS for the test client.

    The origin validator reads ALLOWED_HOSTS once, when the module loads (as at server start),
    so the module is reloaded after the settings change."""
    settings.ALLOWED_HOSTS = ["testserver", "localhost"]
    import dataprep_site.asgi

    return importlib.reload(dataprep_site.asgi).application


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    yield
    channel_layers.backends.clear()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def communicator(
    app, project_pk: int, *, user=None, origin: bytes | None = b"http://testserver"
) -> WebsocketCommunicator:
    """A websocket to the project, from `origin`, logged in as `user` by session cookie."""
    headers = []
    if origin is not None:
        headers.append((b"origin", origin))
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    return WebsocketCommunicator(app, f"/ws/projects/{project_pk}/", headers=headers)


@database_sync_to_async
def submit_first_item(project, user) -> int:
    item = Item.objects.select_related("project").filter(project=project).order_by("id").first()
    submit_handed_out(item=item, annotator=user, labels=["positive"], client_uuid=uuid.uuid4())
    return item.pk


async def assert_progress_after_submit(app, project, user) -> None:
    ws = await communicator(app, project.pk, user=user)
    connected, _ = await ws.connect()
    assert connected
    assert await ws.receive_nothing(timeout=0.1)
    await submit_first_item(project, user)
    message = await ws.receive_json_from(timeout=5)
    assert message == {"type": "progress", "total": 20, "complete": 1}
    await ws.disconnect()


async def test_a_member_gets_progress_after_an_answer_is_submitted(
    asgi_app, memory_layer, project, annotator
):
    await assert_progress_after_submit(asgi_app, project, annotator)


async def test_every_open_page_of_the_project_hears_of_every_answer(
    asgi_app, memory_layer, project, annotator, reviewer
):
    listener = await communicator(asgi_app, project.pk, user=reviewer)
    assert (await listener.connect())[0]
    await submit_first_item(project, annotator)
    assert (await listener.receive_json_from(timeout=5))["complete"] == 1
    await listener.disconnect()


async def test_events_of_another_project_are_not_sent(
    asgi_app, memory_layer, project, other_project, annotator, outsider
):
    ws = await communicator(asgi_app, project.pk, user=annotator)
    assert (await ws.connect())[0]
    item = await database_sync_to_async(
        lambda: Item.objects.select_related("project").get(project=other_project)
    )()
    await database_sync_to_async(submit_handed_out)(
        item=item, annotator=outsider, labels=["a"], client_uuid=uuid.uuid4()
    )
    await submit_first_item(project, annotator)
    # Events reach a socket in the order they were sent: the other project's would come first.
    assert await ws.receive_json_from(timeout=5) == {"type": "progress", "total": 20, "complete": 1}
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_what_a_client_sends_is_ignored(asgi_app, memory_layer, project, annotator):
    ws = await communicator(asgi_app, project.pk, user=annotator)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "project.progress", "total": 1, "complete": 1})
    await submit_first_item(project, annotator)
    # The first message is the real answer's progress, not the client's forgery echoed back.
    assert await ws.receive_json_from(timeout=5) == {"type": "progress", "total": 20, "complete": 1}
    assert await ws.receive_nothing(timeout=0.1)
    await ws.disconnect()


async def test_an_outsider_is_refused(asgi_app, memory_layer, project, outsider):
    ws = await communicator(asgi_app, project.pk, user=outsider)
    connected, code = await ws.connect()
    assert (connected, code) == (False, 4404)


async def test_an_anonymous_visitor_is_refused(asgi_app, memory_layer, project):
    ws = await communicator(asgi_app, project.pk)
    connected, code = await ws.connect()
    assert (connected, code) == (False, 4404)


async def test_a_project_that_does_not_exist_is_refused(asgi_app, memory_layer, annotator):
    ws = await communicator(asgi_app, 999_999, user=annotator)
    assert (await ws.connect())[0] is False


@pytest.mark.parametrize(
    "origin",
    [b"http://evil.example", b"https://testserver.evil.example", b"null", None],
    ids=["other-site", "lookalike", "null", "missing"],
)
async def test_a_bad_origin_is_refused_even_for_a_member(
    asgi_app, memory_layer, project, annotator, origin
):
    ws = await communicator(asgi_app, project.pk, user=annotator, origin=origin)
    connected, _ = await ws.connect()
    assert connected is False


@pytest.mark.redis
async def test_progress_goes_through_a_redis_channel_layer(asgi_app, settings, project, annotator):
    layers = channel_layers_for(service_env.REDIS_URL)
    layers["default"]["CONFIG"]["prefix"] = f"test-{uuid.uuid4().hex[:8]}"  # no cross-talk
    settings.CHANNEL_LAYERS = layers
    try:
        assert type(channel_layers["default"]).__name__ == "RedisChannelLayer"
        await assert_progress_after_submit(asgi_app, project, annotator)
    finally:
        await channel_layers["default"].flush()
        channel_layers.backends.clear()
