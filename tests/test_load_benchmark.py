"""benchmarks/load.py against a live server: a few annotators label through the annotate page's
protocol for a few seconds, and the harness's own bookkeeping (acknowledged answers, items
handed out) agrees with the database; its checks catch a lost answer and an item served twice.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils.crypto import get_random_string

from annotations.models import Annotation, Membership
from annotations.services import project_create
from benchmarks import load
from benchmarks import next_item as nb
from tests.conftest import add_text_items, make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

ANNOTATORS = 3


def _database_url(db: dict) -> str:
    quote = urllib.parse.quote
    user = quote(db["USER"] or "")
    if db["PASSWORD"]:
        user += ":" + quote(db["PASSWORD"])
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'])}"


@pytest.fixture
def team(data_dir):
    """A project of 400 texts and three annotators, each with a session (made here: the server
    reads it from the database) and a CSRF token, as after logging in."""
    project = project_create(name="Load", classes=nb.CLASSES)
    add_text_items(project, [f"text number {i}" for i in range(400)])
    annotators = []
    for i in range(ANNOTATORS):
        user = make_user(f"load-{i}")
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        client = Client()
        client.force_login(user)
        who = nb.Annotator(user.username)
        who.cookies = {
            "sessionid": client.cookies["sessionid"].value,
            "csrftoken": get_random_string(32),
        }
        annotators.append(who)
    return project, annotators


@pytest.fixture
def server(team, data_dir):
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    env.update(
        DATABASE_URL=_database_url(connection.settings_dict),
        SECRET_KEY=settings.SECRET_KEY,  # the sessions made by the test are signed with it
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        STATIC_MANIFEST="0",
        TRAINING_WORKER="embedded",
        DATA_DIR=str(data_dir / "server"),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(settings.BASE_DIR),
    )
    with nb.running_server("uvicorn", 1, {**env, **nb.DB_MODES["pool"]}) as port:
        yield port


def test_the_harness_counts_what_the_database_stores(team, server):
    project, annotators = team
    stats, client_cpu = asyncio.run(
        load.run_load(
            server,
            project.pk,
            annotators,
            pids={},
            profile=[],
            rate=0,
            reopen_every=5,
            warmup=1,
            duration=3,
        )
    )

    verdict = load.verify(project.pk, stats, overlap=1)
    stored = Annotation.objects.filter(project=project)
    assert stats.statuses[("submit", 200)] == verdict.acknowledged > 10
    assert verdict.stored == stored.count() == verdict.acknowledged
    assert (verdict.missing, verdict.duplicated, verdict.unacknowledged) == (0, 0, 0)
    assert (verdict.over_overlap, verdict.served_twice) == (0, 0)
    assert verdict.ok
    assert stats.labels_in_window > 0 and stats.submit_ms and stats.next_ms
    assert not stats.client_errors
    assert stats.trace  # the processes' memory read through the window (none named here)
    # Everything acknowledged was handed to the annotator who answered it, by the server.
    for item_id, username in stats.acknowledged.values():
        assert username in stats.served[item_id]
    assert client_cpu > 0

    # The checks see a lost answer, a duplicate over the overlap, and an item served twice.
    lost = stored.order_by("id").first()
    lost.delete()
    stats.served.setdefault(lost.item_id, set()).add("someone-else")
    broken = load.verify(project.pk, stats, overlap=1)
    assert (broken.missing, broken.served_twice, broken.ok) == (1, 1, False)
    assert load.verify(project.pk, stats, overlap=0).over_overlap == verdict.acknowledged - 1
