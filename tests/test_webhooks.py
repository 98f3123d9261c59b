"""Webhooks: events land in the outbox with the change that causes them (and only then), cost
the submission nothing without a hook, and reach a real receiver signed, retried with backoff,
once, whatever the workers do."""

from __future__ import annotations

import hashlib
import hmac
import random
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotations.models import Item, Membership, Project, Review
from annotations.review import review_decide
from annotations.webhooks import delivery as webhook_delivery
from annotations.webhooks.delivery import backoff_seconds, deliver_due
from annotations.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery, WebhookEvent
from annotations.webhooks.services import (
    delivery_redeliver,
    webhook_create,
    webhook_ping,
    webhook_update,
)
from curation.dataset_versions import version_create
from curation.services import train_project_once
from tests.conftest import make_user, submit_handed_out
from tests.webhook_receiver import start_receiver

pytestmark = pytest.mark.usefixtures("fast_passwords")

ALL = list(WebhookEvent.values)


@pytest.fixture
def allow_private(settings):
    """The local receiver is on 127.0.0.1: a site admin's setting allows it."""
    settings.WEBHOOKS_ALLOW_PRIVATE = True


@pytest.fixture
def receiver(allow_private):
    receiver = start_receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def hook_for(project: Project, url: str, events=ALL) -> Webhook:
    hook = webhook_create(project=project, url=url, events=events)
    project.refresh_from_db()
    return hook


def answer(item: Item, user, labels: list[str]):
    return submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


def items_of(project: Project) -> list[Item]:
    return list(Item.objects.filter(project=project).order_by("id"))


def verify(secret: str, header: str, body: bytes) -> bool:
    """What docs/webhooks.md tells a receiver to do."""
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


# --- The outbox -----------------------------------------------------------------------------


def test_a_submission_costs_no_extra_query_unless_a_hook_listens(project, annotator, allow_private):
    items = items_of(project)

    def queries_of_a_submission(item: Item) -> int:
        from tests.conftest import hand_out

        hand_out(item, annotator)
        with CaptureQueriesContext(connection) as captured:
            answer(item, annotator, ["positive"])
        return len(captured.captured_queries)

    without = queries_of_a_submission(items[0])
    hook_for(project, "http://127.0.0.1:9/", events=[WebhookEvent.REVIEW_DECIDED])
    assert queries_of_a_submission(items[1]) == without  # a hook, but not for answers
    assert not WebhookDelivery.objects.exists()
    hook_for(project, "http://127.0.0.1:9/", events=[WebhookEvent.ANNOTATION_SAVED])
    # Its hooks read, its row written.
    assert queries_of_a_submission(items[2]) == without + 2
    assert WebhookDelivery.objects.get().event == WebhookEvent.ANNOTATION_SAVED


def test_a_rolled_back_submission_leaves_nothing_in_the_outbox(project, annotator, allow_private):
    hook_for(project, "http://127.0.0.1:9/")
    item = items_of(project)[0]
    with pytest.raises(RuntimeError), transaction.atomic():
        answer(item, annotator, ["positive"])
        assert WebhookDelivery.objects.count() == 2  # saved and complete, in the transaction
        raise RuntimeError("the change fails after the event was written")
    assert not WebhookDelivery.objects.exists()
    answer(item, annotator, ["positive"])
    assert sorted(WebhookDelivery.objects.values_list("event", flat=True)) == [
        WebhookEvent.ANNOTATION_SAVED,
        WebhookEvent.ITEM_COMPLETED,
    ]


def test_a_disabled_hook_gets_no_events_and_the_project_flag_follows(
    project, annotator, allow_private
):
    hook = hook_for(project, "http://127.0.0.1:9/", events=[WebhookEvent.ANNOTATION_SAVED])
    assert project.webhook_events == [WebhookEvent.ANNOTATION_SAVED]
    webhook_update(hook, active=False)
    project.refresh_from_db()
    assert project.webhook_events == []
    answer(items_of(project)[0], annotator, ["positive"])
    assert not WebhookDelivery.objects.exists()


# --- Delivery to a real receiver ----------------------------------------------------------------


def test_every_event_type_reaches_the_receiver_signed_with_its_payload(
    project, annotator, reviewer, receiver, data_dir
):
    Project.objects.filter(pk=project.pk).update(overlap=2)
    hook = hook_for(project, receiver.url)
    second = make_user("bea")
    Membership.objects.create(project=project, user=second, role=Membership.Role.ANNOTATOR)
    first, other = items_of(project)[:2]
    answer(first, annotator, ["positive"])
    answer(first, second, ["negative"])  # complete, and a tie: to review
    answer(other, annotator, ["neutral"])
    review = Review.objects.get(item=first)
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["negative"])
    version = train_project_once(project)
    dataset = version_create(project, name="v-hooks", note="for the hook")

    assert deliver_due() == 7
    received = receiver.requests
    assert len(received) == 7
    for request in received:
        assert verify(hook.secret, request.headers["X-Dataprepops-Signature"], request.body)
        assert request.headers["X-Dataprepops-Event"] == request.json["type"]
        assert request.headers["X-Dataprepops-Event-Id"] == request.json["id"]
        assert request.json["project"] == {"id": project.pk, "name": project.name}
    by_type: dict[str, list[dict]] = {}
    for request in received:
        by_type.setdefault(request.json["type"], []).append(request.json["data"])

    saved = by_type[WebhookEvent.ANNOTATION_SAVED]
    assert [(a["annotation"]["annotator"], a["annotation"]["labels"]) for a in saved] == [
        ("annie", ["positive"]),
        ("bea", ["negative"]),
        ("annie", ["neutral"]),
    ]
    assert saved[0]["annotation"]["external_id"] == first.external_id
    assert saved[0]["annotation"]["new"] is True
    (completed,) = by_type[WebhookEvent.ITEM_COMPLETED]
    assert completed["item"]["id"] == first.pk
    assert completed["item"]["answers"] == [["positive"], ["negative"]]
    assert completed["item"]["gold"]["source"] == "tie"
    assert completed["progress"] == {"items": 20, "complete": 1}
    (decided,) = by_type[WebhookEvent.REVIEW_DECIDED]
    assert decided["review"] | {"decided_at": None} == {
        "id": review.pk,
        "item_id": first.pk,
        "external_id": first.external_id,
        "labels": ["negative"],
        "decided_by": "rev",
        "decided_at": None,
        "comment": "",
    }
    (model,) = by_type[WebhookEvent.MODEL_VERSION]
    assert model["model_version"]["version"] == version.version
    assert model["model_version"]["labels_used"] == 2
    (snapshot,) = by_type[WebhookEvent.DATASET_VERSION]
    assert snapshot["dataset_version"]["name"] == "v-hooks"
    assert snapshot["dataset_version"]["content_hash"] == dataset.content_hash
    assert snapshot["dataset_version"]["items"] == 20
    assert WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).count() == 7


def test_a_signature_made_with_another_secret_does_not_verify(project, annotator, receiver):
    hook = hook_for(project, receiver.url, events=[WebhookEvent.ANNOTATION_SAVED])
    answer(items_of(project)[0], annotator, ["positive"])
    deliver_due()
    (request,) = receiver.requests
    header = request.headers["X-Dataprepops-Signature"]
    assert verify(hook.secret, header, request.body)
    assert not verify(hook.secret + "x", header, request.body)
    assert not verify(hook.secret, header, request.body.replace(b"positive", b"negative"))


def test_a_500_is_retried_after_its_backoff_then_succeeds(project, annotator, receiver):
    hook_for(project, receiver.url, events=[WebhookEvent.ANNOTATION_SAVED])
    receiver.answers = [500]
    answer(items_of(project)[0], annotator, ["positive"])
    assert deliver_due() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.PENDING
    assert delivery.attempts == 1 and delivery.last_status_code == 500
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 30 * 0.8 - 1 <= wait <= 30 * 1.2
    assert deliver_due() == 0  # not due yet
    assert deliver_due(now=later(40)) == 1
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert delivery.attempts == 2
    log = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("started_at"))
    assert [a.status_code for a in log] == [500, 200]
    assert log[0].error == "HTTP 500" and log[1].error == ""
    assert all(a.latency_ms >= 0 for a in log)
    # The same event both times: a receiver can tell the retry from a new event.
    first, second = receiver.requests
    assert first.json["id"] == second.json["id"]


def test_backoff_doubles_from_30_seconds_with_at_most_20_percent_jitter():
    rng = random.Random(7)
    for attempts, base in [
        (1, 30),
        (2, 60),
        (3, 120),
        (4, 240),
        (10, 15360),
        (11, 6 * 3600),
        (40, 6 * 3600),
    ]:
        waits = [backoff_seconds(attempts, rng) for _ in range(50)]
        assert all(base * 0.8 <= w <= base * 1.2 for w in waits)
        assert len(set(waits)) > 1  # jittered


def test_a_delivery_out_of_attempts_is_failed_and_a_failing_hook_is_disabled(
    project, annotator, receiver, settings
):
    settings.WEBHOOKS_MAX_ATTEMPTS = 2
    settings.WEBHOOKS_DISABLE_AFTER = 3
    hook = hook_for(project, receiver.url, events=[WebhookEvent.ANNOTATION_SAVED])
    receiver.answers = [503] * 10
    first, second = items_of(project)[:2]
    answer(first, annotator, ["positive"])
    deliver_due()
    deliver_due(now=later(3600))
    failed = WebhookDelivery.objects.get()
    assert failed.status == WebhookDelivery.Status.FAILED and failed.attempts == 2
    answer(second, annotator, ["positive"])
    deliver_due(now=later(7200))
    hook.refresh_from_db()
    project.refresh_from_db()
    assert not hook.active
    assert "3 failed attempts in a row" in hook.disabled_reason
    assert project.webhook_events == []
    # Its pending delivery waits; enabling the hook sends it.
    receiver.answers = []
    assert deliver_due(now=later(99999)) == 0
    webhook_update(hook, active=True)
    assert deliver_due(now=later(99999)) == 1
    assert WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).count() == 1


def test_a_worker_that_dies_mid_run_loses_nothing(project, annotator, receiver, monkeypatch):
    hook_for(project, receiver.url, events=[WebhookEvent.ANNOTATION_SAVED])
    for item in items_of(project)[:3]:
        answer(item, annotator, ["positive"])
    real_post = webhook_delivery.post
    calls = []

    def dies_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("the worker process is killed")
        return real_post(*args, **kwargs)

    monkeypatch.setattr(webhook_delivery, "post", dies_on_the_second)
    with pytest.raises(SystemExit):
        deliver_due()
    assert len(receiver.requests) == 1
    statuses = sorted(WebhookDelivery.objects.values_list("status", flat=True))
    assert statuses == ["delivered", "pending", "pending"]
    monkeypatch.setattr(webhook_delivery, "post", real_post)
    # The row it held waits for its lease to end; the untouched one goes at once.
    assert deliver_due() == 1
    assert deliver_due(now=later(webhook_delivery.lease_seconds() + 1)) == 1
    assert len(receiver.requests) == 3
    assert len({r.json["id"] for r in receiver.requests}) == 3


def test_a_test_event_and_a_redelivery_go_to_the_receiver(project, receiver):
    hook = hook_for(project, receiver.url, events=[WebhookEvent.REVIEW_DECIDED])
    ping = webhook_ping(hook)
    deliver_due()
    (request,) = receiver.requests
    assert request.json["type"] == "ping"
    assert request.json["data"]["webhook"]["id"] == hook.pk
    delivery_redeliver(ping)
    deliver_due()
    assert len(receiver.requests) == 2
    assert receiver.requests[1].json["id"] == request.json["id"]
    assert WebhookAttempt.objects.filter(delivery=ping).count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_delivery_runs_at_once_never_send_a_row_twice(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if connection.vendor != "postgresql":
        pytest.skip("SKIP LOCKED needs PostgreSQL")
    receiver = start_receiver()
    receiver.delay = 0.02
    try:
        project = Project.objects.create(name="Concurrent hooks")
        hook = webhook_create(project=project, url=receiver.url, events=ALL)
        now = timezone.now()
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(webhook=hook, event="ping", payload={"n": n}, next_attempt_at=now)
                for n in range(30)
            ]
        )
        counts: list[int] = []

        def run() -> None:
            try:
                counts.append(deliver_due())
            finally:
                connection.close()

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(counts) == 30 and all(counts)  # both worked, on different rows
        sent = [r.json["n"] for r in receiver.requests]
        assert sorted(sent) == list(range(30))
        assert WebhookAttempt.objects.count() == 30
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.mark.django_db(transaction=True)
def test_the_training_workers_delivery_run_sends_what_is_due(project, receiver):
    """As the worker runs it, in a thread of its own with its own connections."""
    from curation.worker import deliver_webhooks

    hook = hook_for(project, receiver.url, events=[WebhookEvent.REVIEW_DECIDED])
    webhook_ping(hook)
    assert deliver_webhooks() == 1
    assert [r.json["type"] for r in receiver.requests] == ["ping"]
