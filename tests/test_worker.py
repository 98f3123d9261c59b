"""The loop over Channels: a committed label reaches the training worker through the channel
layer, the worker trains from the database and the project's websocket hears the new version;
lost events, a layer that is down and a crashed model write lose nothing."""

from __future__ import annotations

import asyncio
import importlib
import threading
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from channels.worker import Worker
from django.test import Client
from django.utils import timezone

from annotations.models import Annotation, Item, ItemLease, Project
from annotations.services import project_create
from curation import artifacts, services, trainer, worker
from curation.models import ModelVersion, ProjectTraining
from dataprep_site.env import channel_layers_for
from tests import service_env
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def texts(db) -> tuple[Project, dict[str, list[Item]]]:
    project = project_create(name="Reviews", classes=list(WORDS))
    by_class = {}
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(12)]
        by_class[name] = add_text_items(project, lines, prefix=name)
    return project, by_class


@pytest.fixture
def annie(texts):
    from annotations.models import Membership

    user = make_user("worker-annie")
    Membership.objects.create(project=texts[0], user=user, role=Membership.Role.ANNOTATOR)
    return user


def label(item: Item, user, name: str) -> None:
    submit_handed_out(
        item=item, annotator=user, labels=[name], skipped=False, client_uuid=uuid.uuid4()
    )


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def receive_until(communicator, kind: str, timeout: float = 20.0) -> dict:
    """The next message of `kind`, skipping others (progress events come first)."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message.get("type") == kind:
            return message


async def test_a_committed_label_reaches_the_worker_and_the_page_hears_the_new_version(
    settings, memory_layer, texts, annie
):
    """The whole loop on the in-memory layer, as in embedded mode: submit → on_commit → channel
    → worker (trains from the DB) → group → the project websocket."""
    settings.ALLOWED_HOSTS = ["testserver"]
    import dataprep_site.asgi

    app = importlib.reload(dataprep_site.asgi).application
    project, by_class = texts
    layer = get_channel_layer()
    running = asyncio.ensure_future(
        Worker(dataprep_site.asgi.channel_application, [worker.TRAINING_CHANNEL], layer).arun()
    )
    cookie = await database_sync_to_async(session_cookie)(annie)
    page = WebsocketCommunicator(
        app,
        f"/ws/projects/{project.pk}/",
        headers=[(b"origin", b"http://testserver"), (b"cookie", cookie)],
    )
    try:
        connected, _ = await page.connect()
        assert connected
        await database_sync_to_async(label)(by_class["positive"][0], annie, "positive")
        first = await receive_until(page, "model")
        assert (first["version"], first["labels_used"], first["since"]) == (1, 1, 0)
        # The page hears which classes the model still needs, and that it cannot rank yet.
        assert (first["cold"], first["ranking"]) == (True, False)
        assert first["needs"][0] == {"name": "positive", "labels": 1, "wanted": 3}
        assert [need["name"] for need in first["needs"]] == list(WORDS)
        await database_sync_to_async(label)(by_class["negative"][0], annie, "negative")
        second = await receive_until(page, "model")
        assert (second["version"], second["labels_used"]) == (2, 2)
        assert second["ranking"] is True  # two classes: the model ranks the queue
        assert (
            await database_sync_to_async(ModelVersion.objects.filter(project=project).count)() == 2
        )
    finally:
        await page.disconnect()
        running.cancel()


def handled_requests(monkeypatch) -> list:
    """What each training request the consumer handled returned, in order (the real handler
    runs; this only records its result, so a test can wait for a request instead of sleeping)."""
    results = []
    real = worker.handle_request

    def recording(project_id: int):
        result = real(project_id)
        results.append(result)
        return result

    monkeypatch.setattr(worker, "handle_request", recording)
    return results


async def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def test_the_training_consumer_trains_the_project_it_is_asked_about(
    texts, annie, monkeypatch
):
    """The consumer alone, through channels.testing, as `runworker training` runs it."""
    handled = handled_requests(monkeypatch)
    project, by_class = texts
    for name, items in by_class.items():
        for item in items[:3]:
            await database_sync_to_async(label)(item, annie, name)
    consumer = ApplicationCommunicator(
        worker.TrainingConsumer.as_asgi(), {"type": "channel", "channel": "training"}
    )
    await consumer.send_input({"type": "training.request", "project_id": project.pk})
    await wait_for(lambda: len(handled) == 1, "the request is handled")
    training = await database_sync_to_async(
        ProjectTraining.objects.select_related("current_version").get
    )(project=project)
    assert handled[0].version.pk == training.current_version_id
    assert training.current_version.labels_used == 6
    assert training.current_version.metrics["cold"] is False
    assert training.current_version.metrics["ranked"] > 0
    # A second request with nothing new makes no new version.
    await consumer.send_input({"type": "training.request", "project_id": project.pk})
    await wait_for(lambda: len(handled) == 2, "the second request is handled")
    assert handled[1] is None
    assert await database_sync_to_async(ModelVersion.objects.filter(project=project).count)() == 1
    consumer.stop()


def test_labels_whose_event_was_lost_are_trained_by_the_next_run(texts, annie, monkeypatch):
    project, by_class = texts
    sent = []
    monkeypatch.setattr(worker, "request_training", lambda pid: sent.append(pid) or False)
    for name, items in by_class.items():
        for item in items[:4]:
            label(item, annie, name)
    assert services.is_stale(project) and services.stale_projects() == [project.pk]

    # The next label's event (or the sweep, or a heartbeat) trains on *all* of them.
    trained = worker.sweep()

    assert trained == [project.pk]
    version = ModelVersion.objects.get(project=project)
    assert version.labels_used == 8 and version.class_balance == {"positive": 4, "negative": 4}
    assert not services.is_stale(project) and services.stale_projects() == []


def test_a_submission_succeeds_when_the_channel_layer_is_down_and_training_catches_up(
    settings, texts, annie
):
    """Redis unreachable: the answer is stored and acknowledged; the event is logged as lost."""
    settings.CHANNEL_LAYERS = channel_layers_for("redis://127.0.0.1:1/0")  # nothing listens
    channel_layers.backends.clear()
    project, by_class = texts
    try:
        label(by_class["positive"][0], annie, "positive")
        label(by_class["negative"][0], annie, "negative")
    finally:
        channel_layers.backends.clear()
    assert Annotation.objects.filter(project=project).count() == 2
    assert services.is_stale(project)
    result = worker.handle_request(project.pk)
    assert result is not None and result.version.labels_used == 2


def test_the_heartbeat_asks_for_training_when_the_model_lags(client, memory_layer, texts, annie):
    project, by_class = texts
    label(by_class["positive"][0], annie, "positive")  # its event goes to the channel…
    layer = get_channel_layer()
    from asgiref.sync import async_to_sync

    drained = async_to_sync(layer.receive)(worker.TRAINING_CHANNEL)  # …and is lost here
    assert drained == {"type": "training.request", "project_id": project.pk}
    client.force_login(annie)

    client.post(f"/projects/{project.pk}/annotate/heartbeat/")

    again = async_to_sync(layer.receive)(worker.TRAINING_CHANNEL)
    assert again == {"type": "training.request", "project_id": project.pk}
    trainer.train(project.pk)
    client.post(f"/projects/{project.pk}/annotate/heartbeat/")  # up to date: nothing sent
    assert layer.channels.get(worker.TRAINING_CHANNEL) is None or (
        layer.channels[worker.TRAINING_CHANNEL].empty()
    )


def test_a_crash_while_writing_the_model_leaves_the_previous_version_whole(
    texts, annie, monkeypatch
):
    project, by_class = texts
    label(by_class["positive"][0], annie, "positive")
    label(by_class["negative"][0], annie, "negative")
    first = trainer.train(project.pk).version
    before = first.path.read_bytes()
    label(by_class["positive"][1], annie, "positive")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", crash)
    with pytest.raises(OSError):
        trainer.train(project.pk)
    monkeypatch.undo()

    training = ProjectTraining.objects.get(project=project)
    assert training.current_version_id == first.pk and training.labels_seen == 2
    assert ModelVersion.objects.filter(project=project).count() == 1
    assert first.path.read_bytes() == before
    assert [p.name for p in first.path.parent.iterdir()] == ["v1.dpmodel"]  # no temp file left
    learner = services.current_model(project)
    assert learner.n_labels == 2
    # The next run catches up with the label the crashed run could not record.
    assert trainer.train(project.pk).version.labels_used == 3


@pytest.mark.redis
@pytest.mark.postgres
def test_labels_wait_in_redis_while_no_worker_runs_and_are_trained_when_one_starts(
    settings, texts, annie, monkeypatch
):
    settings.CHANNEL_LAYERS = channel_layers_for(service_env.REDIS_URL)
    channel_layers.backends.clear()
    from asgiref.sync import async_to_sync

    layer = get_channel_layer()
    async_to_sync(layer.flush)()
    handled = handled_requests(monkeypatch)
    project, by_class = texts
    try:
        label(by_class["positive"][0], annie, "positive")
        label(by_class["negative"][0], annie, "negative")
        assert not ModelVersion.objects.filter(project=project).exists()

        async def one_worker_run() -> None:
            consumer = ApplicationCommunicator(
                worker.TrainingConsumer.as_asgi(), {"type": "channel", "channel": "training"}
            )
            for _ in range(2):  # both events are waiting in Redis
                message = await layer.receive(worker.TRAINING_CHANNEL)
                await consumer.send_input(message)
            await wait_for(lambda: len(handled) == 2, "both requests are handled")
            consumer.stop()

        async_to_sync(one_worker_run)()
    finally:
        async_to_sync(layer.flush)()
        channel_layers.backends.clear()
    versions = list(ModelVersion.objects.filter(project=project))
    assert len(versions) == 1 and versions[0].labels_used == 2
    assert handled[0].version == versions[0] and handled[1] is None  # the second found it done


@pytest.mark.parametrize("mode", ["embedded", "external"])
async def test_the_server_runs_the_worker_itself_only_in_embedded_mode(
    settings, memory_layer, mode
):
    settings.TRAINING_WORKER = mode
    import dataprep_site.asgi

    app = worker.EmbeddedTrainingWorker(None, dataprep_site.asgi.channel_application)
    server = ApplicationCommunicator(app, {"type": "lifespan"})
    await server.send_input({"type": "lifespan.startup"})
    assert (await server.receive_output())["type"] == "lifespan.startup.complete"
    if mode == "external":
        assert app.task is None
        return
    assert app.task is not None and not app.task.done()
    await server.send_input({"type": "lifespan.shutdown"})
    assert (await server.receive_output())["type"] == "lifespan.shutdown.complete"
    await asyncio.wait([app.task], timeout=5)
    assert app.task.cancelled()


def test_an_answer_stamped_before_the_last_run_but_committed_after_it_is_trained(texts, annie):
    """Two annotators' transactions commit out of order: the later commit carries the earlier
    timestamp. The next run must still count it.

    The trainer's watermark is `GoldLabel.updated_at`, so that is the stamp set back here. The
    late change is a relabel (the number of labelled items stays the same), so the trainer's
    rebuild-on-count-mismatch cannot hide a missed row: only the look-back catches it."""
    from datetime import timedelta

    from annotations.models import GoldLabel
    from annotations.queue import next_items

    project, by_class = texts
    next_items(project=project, user=annie, count=Item.objects.filter(project=project).count())
    positive, negative = by_class["positive"], by_class["negative"]
    for item in positive[:2]:
        label(item, annie, "positive")
    for item in negative[:2]:
        label(item, annie, "negative")
    first = trainer.train(project.pk).version
    assert first.class_balance == {"positive": 2, "negative": 2}
    watermark = ProjectTraining.objects.get(project=project).labels_until

    # Committed after the run read the labels, but stamped before its watermark.
    label(negative[0], annie, "positive")
    GoldLabel.objects.filter(item=negative[0]).update(updated_at=watermark - timedelta(seconds=1))
    # A later change, stamped after the watermark, that makes the next run train.
    label(positive[1], annie, "negative")

    result = trainer.train(project.pk)

    assert result is not None and result.version.version == first.version + 1
    assert result.version.labels_used == 4
    # negative[0] now positive, positive[1] now negative; without the late relabel: 1 and 3.
    assert result.version.class_balance == {"positive": 2, "negative": 2}


@pytest.mark.redis
def test_an_idle_worker_keeps_listening_on_redis_for_longer_than_five_seconds(settings):
    """redis-py 8's default 5 s read timeout would end an idle `runworker` after 5 s."""
    from asgiref.sync import async_to_sync

    settings.CHANNEL_LAYERS = channel_layers_for(service_env.REDIS_URL)
    channel_layers.backends.clear()
    layer = get_channel_layer()

    async def idle_then_message() -> dict:
        listener = asyncio.ensure_future(layer.receive("idle-check"))
        await asyncio.sleep(6.5)  # longer than one blocking receive on the server (5 s)
        assert not listener.done(), "the receive ended while idle"
        await layer.send("idle-check", {"type": "wake.up"})
        return await asyncio.wait_for(listener, 5)

    try:
        assert async_to_sync(idle_then_message)() == {"type": "wake.up"}
    finally:
        async_to_sync(layer.flush)()
        channel_layers.backends.clear()


def test_the_sweep_deletes_leases_that_expired_an_hour_ago_and_keeps_the_rest(texts, annie):
    project, by_class = texts
    now = timezone.now()
    items = by_class["positive"][:3]
    for item, expired in zip(items, [timedelta(hours=2), timedelta(minutes=5), None], strict=True):
        expires = now - expired if expired else now + timedelta(minutes=10)
        ItemLease.objects.create(
            project=project, item=item, user=annie, created_at=now, expires_at=expires
        )

    worker.sweep()

    left = set(ItemLease.objects.values_list("item_id", flat=True))
    assert left == {items[1].pk, items[2].pk}


async def test_a_consumer_instance_that_dies_loses_no_training(settings, texts, annie, monkeypatch):
    """An instance that ends takes the requests queued in it along; the worker forgets what it
    thought was waiting there (else it merges every later request into a lost one) and sweeps."""
    settings.CHANNEL_LAYERS = {}  # the labels send no wake-ups: the test sends its own
    channel_layers.backends.clear()
    project, by_class = texts
    entered, release = threading.Event(), threading.Event()
    real = worker.handle_request

    def dies_once(project_id: int):
        if not entered.is_set():
            entered.set()
            release.wait(10)
            raise RuntimeError("the instance ends here")
        return real(project_id)

    monkeypatch.setattr(worker, "handle_request", dies_once)
    running_worker = worker.TrainingWorker(
        worker.training_application(),
        [worker.TRAINING_CHANNEL],
        InMemoryChannelLayer(),
        sweep_seconds=3600,
    )
    running_worker.application_checker_interval = 0.05
    running = asyncio.ensure_future(running_worker.arun())
    request = {"type": "training.request", "project_id": project.pk}
    try:
        await wait_for(lambda: not worker._sweep_queued.is_set(), "the start-up sweep")
        await database_sync_to_async(label)(by_class["positive"][0], annie, "positive")
        await database_sync_to_async(label)(by_class["negative"][0], annie, "negative")
        running_worker.dispatch(request)
        await wait_for(entered.is_set, "the first request runs")
        running_worker.dispatch(request)  # queued behind it, in the same instance
        release.set()

        async def labels_used() -> int:
            training = await database_sync_to_async(
                ProjectTraining.objects.filter(project=project)
                .select_related("current_version")
                .first
            )()
            version = training.current_version if training else None
            return version.labels_used if version else 0

        for expected in (2, 3):
            deadline = asyncio.get_running_loop().time() + 20
            while await labels_used() != expected:
                assert asyncio.get_running_loop().time() < deadline, f"{expected} labels trained"
                await asyncio.sleep(0.05)
            # A later label's request is not merged into the lost one.
            await database_sync_to_async(label)(by_class["positive"][1], annie, "positive")
            running_worker.dispatch(request)
    finally:
        release.set()
        instances = [d["future"] for d in running_worker.application_instances.values()]
        for task in [running, *instances]:
            task.cancel()
        await asyncio.gather(running, *instances, return_exceptions=True)


def test_follow_up_work_waits_for_a_training_request_that_has_not_started_yet():
    """An analysis chunk or a re-estimate fold that began beside a queued label's run shared
    the CPU and the GIL with it; they now wait while a request is queued, not only while a
    run is in progress."""
    pace = worker.TrainingPace()
    try:
        assert trainer.wait_while_training(timeout=0.05) is True
        assert pace.admit(1)
        assert trainer.wait_while_training(timeout=0.05) is False  # queued: wait for it
        assert not pace.admit(1)  # merged: still one waiting
        pace.started(1)
        assert trainer.wait_while_training(timeout=0.05) is True
        pace.admit(2)
        pace.forget()  # a worker that stops takes its queued requests along
        assert trainer.wait_while_training(timeout=0.05) is True
    finally:
        pace.forget()
