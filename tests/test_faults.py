"""The model loop survives faults by itself, tested with real processes and services: a private
Redis that is stopped and started again, training workers (`manage.py trainworker`) that are
started late, lose their wake-up calls or are killed mid-training, and a web server whose
database connections are terminated under it.

Each test starts its own processes against the test database (committed data: transactional
tests) and stops them; a private `redis-server` on a free port stands in for Redis, so the
shared one is never touched. Waits poll the database against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import connection
from django.test import Client

from annotations.models import Annotation, Item, Membership, Project
from annotations.queue import next_items
from annotations.services import annotation_submit, project_create
from curation.models import ModelVersion, ProjectTraining
from curation.training_requests import TRAINING_CHANNEL
from curation.worker import TrainingConsumer
from dataprep_site.env import channel_layers_for
from tests.conftest import add_text_items, make_user

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

ROOT = Path(__file__).resolve().parent.parent
WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}
#: How long any one wait may take: a worker process starts in a few seconds on a busy machine.
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class PrivateRedis:
    """A redis-server of this test's own, on a free port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, f"redis-server on port {self.port}", timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def private_redis(tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def use_layer(settings):
    """Point this (the web) process's channel layer at a URL; None: in memory."""

    def use(url: str | None) -> None:
        settings.CHANNEL_LAYERS = channel_layers_for(url)
        channel_layers.backends.clear()

    yield use
    channel_layers.backends.clear()


def database_url() -> str:
    """The test database (test_<name>), for the processes a test starts."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DB_POOL", "DEBUG"}}
    env.update(
        DATABASE_URL=database_url(),
        DATA_DIR=str(tmp_path / "data"),
        TRAINING_WORKER="external",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


class Processes:
    """The processes a test started, each logging to a file; all stopped at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.tmp_path / f"process-{len(self.started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.started.append((process, log))
        return process

    def worker(self, redis_url: str, *, sweep_seconds: float) -> subprocess.Popen:
        return self.start(
            ["manage.py", "trainworker", "--sweep-seconds", str(sweep_seconds)],
            child_env(self.tmp_path, REDIS_URL=redis_url),
        )

    def log(self, process: subprocess.Popen) -> str:
        return next(log for p, log in self.started if p is process).read_text()

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@pytest.fixture
def processes(tmp_path):
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def texts(db) -> tuple[Project, dict[str, list[Item]]]:
    project = project_create(name="Reviews", classes=list(WORDS))
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(10)]
        add_text_items(project, lines, prefix=name)
    return project


@pytest.fixture
def annie(texts):
    user = make_user("faults-annie")
    Membership.objects.create(project=texts, user=user, role=Membership.Role.ANNOTATOR)
    return user


def truth(external_id: str) -> str:
    """The class an item of `texts` belongs to: its external id is the class and a number."""
    return external_id.rstrip("0123456789")


def label_next(project: Project, user, n: int) -> list[int]:
    """Take `n` items from the queue and answer them (service layer, as the pages do)."""
    done = []
    for item in next_items(project=project, user=user, count=n):
        annotation_submit(
            item=item, annotator=user, labels=[truth(item.external_id)], client_uuid=uuid.uuid4()
        )
        done.append(item.pk)
    return done


def labels_used(project: Project) -> int:
    """Labels of the project's current model (0: none yet)."""
    training = ProjectTraining.objects.filter(project=project).select_related("current_version")
    row = training.first()
    return row.current_version.labels_used if row and row.current_version else 0


def test_labels_given_while_redis_is_down_are_trained_when_it_is_back_without_a_restart(
    texts, annie, private_redis, use_layer, processes
):
    project = texts
    use_layer(private_redis.url)
    worker = processes.worker(private_redis.url, sweep_seconds=3600)  # no timer: Redis only
    label_next(project, annie, 2)
    wait_until(lambda: labels_used(project) == 2, "the wake-ups of 2 labels, through Redis")

    private_redis.stop()
    client = Client()
    client.force_login(annie)
    served = client.get(f"/api/projects/{project.pk}/next/", {"count": 4}).json()["results"]
    for item in served:
        answer = {
            "item": item["id"],
            "labels": [truth(item["external_id"])],
            "client_uuid": str(uuid.uuid4()),
        }
        response = client.post(
            f"/api/projects/{project.pk}/annotations/", answer, content_type="application/json"
        )
        assert response.status_code == 201, response.content  # the label is in PostgreSQL
    assert Annotation.objects.filter(project=project).count() == 6
    time.sleep(1.5)  # the worker retries meanwhile: it must not give up
    assert worker.poll() is None, processes.log(worker)

    private_redis.start()
    wait_until(lambda: labels_used(project) == 6, "the labels given while Redis was down")
    label_next(project, annie, 1)  # its wake-up goes through the restarted Redis
    wait_until(lambda: labels_used(project) == 7, "a wake-up through the restarted Redis")
    assert worker.poll() is None
    log = processes.log(worker)
    assert log.count("channel layer unreachable") == 1, log  # once per outage, not per retry
    assert "reachable again" in log


async def test_a_redis_outage_does_not_end_the_training_consumer_nor_lose_the_requests_it_holds(
    texts, annie, private_redis, use_layer
):
    """The consumer needs Redis for nothing: had it listened on a channel of its own there, an
    outage would end it, with the training requests waiting in its queue (under load, the
    wake-up of the first label after the outage was lost with them, and with it the project's
    training until the next sweep)."""
    project = texts
    use_layer(private_redis.url)
    # Their wake-ups wait in Redis: no worker listens.
    await database_sync_to_async(label_next)(project, annie, 2)
    queue: asyncio.Queue = asyncio.Queue()
    consumer = asyncio.ensure_future(
        TrainingConsumer.as_asgi()(
            {"type": "channel", "channel": TRAINING_CHANNEL}, queue.get, queue.put
        )
    )
    try:
        await asyncio.sleep(0.5)  # it runs
        private_redis.stop()
        await asyncio.sleep(3)
        assert not consumer.done(), consumer.exception()
        await queue.put({"type": "training.request", "project_id": project.pk})
        deadline = time.monotonic() + DEADLINE
        while await database_sync_to_async(labels_used)(project) != 2:
            assert time.monotonic() < deadline, "the request queued after the outage is lost"
            await asyncio.sleep(0.1)
    finally:
        consumer.cancel()


def test_a_worker_that_starts_trains_the_labels_given_before_it(
    texts, annie, private_redis, use_layer, processes
):
    project = texts
    use_layer(None)  # the wake-ups go nowhere: no worker runs yet
    label_next(project, annie, 3)
    assert labels_used(project) == 0

    processes.worker(private_redis.url, sweep_seconds=3600)

    wait_until(lambda: labels_used(project) == 3, "the start-up sweep")


def test_a_worker_sweeps_the_database_on_its_timer_while_redis_is_down(
    texts, annie, private_redis, use_layer, processes
):
    project = texts
    use_layer(private_redis.url)
    worker = processes.worker(private_redis.url, sweep_seconds=1)
    label_next(project, annie, 2)
    wait_until(lambda: labels_used(project) == 2, "the first model")
    private_redis.stop()

    label_next(project, annie, 3)  # their wake-ups are lost with Redis

    wait_until(lambda: labels_used(project) == 5, "a sweep on the worker's timer")
    assert worker.poll() is None


def test_a_worker_killed_mid_training_leaves_the_project_to_another_one(
    texts, annie, private_redis, use_layer, processes
):
    """The first worker is stopped inside its training transaction (it holds the project's
    row lock and waits to insert its version row), then killed; its connection dies, the
    transaction rolls back and a second worker trains every label, once."""
    project = texts
    use_layer(None)
    label_next(project, annie, 4)
    ProjectTraining.objects.get_or_create(project=project)
    with psycopg.connect(database_url()) as blocker:
        # An uncommitted version 1 of the project: the worker's insert of its version 1 has to
        # wait for this transaction, inside its own.
        blocker.execute(
            "INSERT INTO curation_modelversion (project_id, version, artifact, featurizer_name, "
            "featurizer_version, labels_used, class_balance, metrics, strategy, trained_at, "
            "duration_ms) VALUES (%s, 1, 'x', 'x', 1, 0, '{}', '{}', 'margin', now(), 0)",
            [project.pk],
        )
        first = processes.worker(private_redis.url, sweep_seconds=3600)
        wait_until(
            lambda: waiting_on_lock('INSERT INTO "curation_modelversion"'),
            "the first worker to be inside its training transaction",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = processes.worker(private_redis.url, sweep_seconds=3600)
        wait_until(
            lambda: waiting_on_lock('SELECT "curation_projecttraining"'),
            "the second worker to wait for the project's row lock",
        )
        blocker.rollback()

    wait_until(lambda: labels_used(project) == 4, "the second worker's model")
    versions = list(ModelVersion.objects.filter(project=project))
    assert [(v.version, v.labels_used) for v in versions] == [(1, 4)]
    assert second.poll() is None


def waiting_on_lock(query_start: str) -> bool:
    """True when a backend of this test database waits for a lock in a query starting so
    (pg_stat_activity keeps the first 1 kB of a query: match its start)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            [f"{query_start}%"],
        )
        return cursor.fetchone()[0] > 0


def terminate_other_backends() -> int:
    """pg_terminate_backend on every other connection to this test's database (only)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


class ApiClient:
    """A client that resends a submission with the same id after a server error."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.statuses: list[int] = []

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None

    def submit(self, project_id: int, item: dict, client_uuid: str) -> int:
        body = {"item": item["id"], "labels": [truth(item["external_id"])]}
        for _ in range(3):
            code, _ = self.call(
                "POST",
                f"/api/projects/{project_id}/annotations/",
                body | {"client_uuid": client_uuid},
            )
            self.statuses.append(code)
            if code < 500:
                return code
        return code


def test_a_server_whose_database_connections_are_terminated_answers_the_next_requests(
    texts, annie, processes, tmp_path
):
    from knox.models import AuthToken

    project = texts
    _, token = AuthToken.objects.create(user=annie)
    port = free_port()
    server = processes.start(
        ["-m", "uvicorn", "dataprep_site.asgi:application", "--host", "127.0.0.1"]
        + ["--port", str(port), "--no-access-log"],
        child_env(tmp_path, DB_POOL="1", DB_POOL_MIN_SIZE="2", ALLOWED_HOSTS="127.0.0.1"),
    )
    api = ApiClient(f"http://127.0.0.1:{port}", token)

    def up() -> bool:
        try:
            code = api.call("GET", f"/api/projects/{project.pk}/")[0]
        except OSError:
            return False
        assert code == 200, processes.log(server)
        return True

    wait_until(up, "the web server")
    _, body = api.call("GET", f"/api/projects/{project.pk}/next/?count=6")
    served = body["results"]
    ids = [str(uuid.uuid4()) for _ in served]
    assert api.submit(project.pk, served[0], ids[0]) == 201

    for round_ in range(2):
        assert terminate_other_backends() >= 1  # the server's pooled connections
        for n in (1 + 2 * round_, 2 + 2 * round_):
            assert api.submit(project.pk, served[n], ids[n]) == 201
        assert api.submit(project.pk, served[1], ids[1]) == 200  # a resend changes nothing

    assert 500 not in api.statuses, api.statuses
    stored = Annotation.objects.filter(project=project)
    assert sorted(stored.values_list("client_uuid", flat=True)) == sorted(
        uuid.UUID(i) for i in ids[:5]
    )
