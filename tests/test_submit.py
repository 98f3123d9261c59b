"""Submitting answers: exactly once per submission id, edits in place with a revision log,
bad input refused with a clear message and nothing changed."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

import pytest
from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import queue
from annotations.models import Annotation, AnnotationRevision, Item, ItemLease, Project
from annotations.services import (
    SubmissionRefused,
    annotation_submit,
    project_create,
    project_set_overlap,
)
from tests.conftest import add_text_items, hand_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def counts(project: Project, item: Item) -> tuple[int, int, bool, int, int]:
    """(annotations, revisions, item open?, item answer count, project complete count)."""
    item.refresh_from_db()
    project.refresh_from_db()
    return (
        Annotation.objects.filter(item=item).count(),
        AnnotationRevision.objects.filter(annotation__item=item).count(),
        item.needs_annotation,
        item.annotation_count,
        project.complete_count,
    )


def run_in_threads(n: int, work: Callable[[int], object]) -> tuple[list, list[BaseException]]:
    """Run `work(i)` in `n` threads released together; each thread has its own connection."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


# --- Idempotency under concurrency (PostgreSQL) ------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_submission_sent_ten_times_at_once_is_stored_once(project, annotator):
    item = project.items.order_by("id").first()
    hand_out(item, annotator)
    sid = uuid.uuid4()

    def submit(_: int):
        fresh = Item.objects.select_related("project").get(pk=item.pk)
        return annotation_submit(
            item=fresh, annotator=annotator, labels=["negative"], client_uuid=sid
        )

    results, errors = run_in_threads(10, submit)
    assert not errors, errors
    assert {r.annotation.pk for r in results} == {Annotation.objects.get().pk}
    assert sum(r.created for r in results) == 1
    assert sum(r.changed for r in results) == 1
    assert counts(project, item) == (1, 0, False, 1, 1)
    assert Annotation.objects.get().labels == ["negative"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_completing_submission_waits_for_the_projects_row_only_to_commit(project, annotator):
    """Every completing submission moves the project's counter, so its row is the one all of a
    team's submissions queue for: under 50 annotators ~11 waited for it at any moment while
    each holder went on to its gold label, its lease and its commit. Locked last, a
    submission that waits for the row has done everything else (here: its lease is gone)."""
    item = project.items.order_by("id").first()
    hand_out(item, annotator)
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_the_projects_row() -> None:
        try:
            with transaction.atomic():
                Project.objects.select_for_update().get(pk=project.pk)
                held.set()
                release.wait(30)
        finally:
            connection.close()

    def submit() -> None:
        try:
            fresh = Item.objects.select_related("project").get(pk=item.pk)
            annotation_submit(
                item=fresh, annotator=annotator, labels=["negative"], client_uuid=uuid4()
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_projects_row)
    holder.start()
    assert held.wait(10)
    submitter = threading.Thread(target=submit)
    submitter.start()
    try:
        _wait_for_a_backend_waiting_on_a_lock()
        with pytest.raises(OperationalError, match="could not obtain lock"), transaction.atomic():
            list(ItemLease.objects.select_for_update(nowait=True).filter(item=item))
    finally:
        release.set()
        holder.join(30)
        submitter.join(30)
    assert not errors, errors
    assert counts(project, item) == (1, 0, False, 1, 1)


def _wait_for_a_backend_waiting_on_a_lock() -> None:
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("no submission waited for the project's row")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_submission_posted_ten_times_at_once_over_http_is_stored_once(project, annotator):
    item = project.items.order_by("id").first()
    hand_out(item, annotator)
    sid = str(uuid.uuid4())

    def post(_: int) -> int:
        client = Client()
        client.force_login(annotator)
        response = client.post(
            reverse("annotate_submit", args=[project.pk]),
            {"item": item.pk, "labels": ["positive"], "client_uuid": sid},
        )
        return response.status_code

    statuses, errors = run_in_threads(10, post)
    assert not errors, errors
    assert statuses == [200] * 10
    assert counts(project, item) == (1, 0, False, 1, 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_different_submissions_for_one_item_at_once_keep_one_answer(project, annotator):
    """A double click that made new ids: one answer, the rest logged as edits, counted once."""
    item = project.items.order_by("id").first()
    hand_out(item, annotator)
    choices = ["positive", "negative", "neutral"]

    def submit(i: int):
        fresh = Item.objects.select_related("project").get(pk=item.pk)
        return annotation_submit(
            item=fresh, annotator=annotator, labels=[choices[i % 3]], client_uuid=uuid.uuid4()
        )

    results, errors = run_in_threads(10, submit)
    assert not errors, errors
    assert sum(r.created for r in results) == 1
    assert counts(project, item) == (1, 9, False, 1, 1)


# --- Resends and edits -----------------------------------------------------------------------


def first_item(project: Project, annotator=None) -> Item:
    """The project's first item, handed out to `annotator` when given."""
    item = Item.objects.select_related("project").filter(project=project).order_by("id").first()
    if annotator is not None:
        hand_out(item, annotator)
    return item


def test_a_resent_submission_returns_the_stored_answer_and_changes_nothing(project, annotator):
    item, sid = first_item(project, annotator), uuid.uuid4()
    first = annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=sid)
    again = annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=sid)
    assert (first.created, first.changed) == (True, True)
    assert (again.created, again.changed) == (False, False)
    assert again.annotation.pk == first.annotation.pk
    assert counts(project, item) == (1, 0, False, 1, 1)


def test_a_resend_arriving_after_an_edit_does_not_revert_the_edit(project, annotator):
    item, original = first_item(project, annotator), uuid.uuid4()
    annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=original)
    annotation_submit(item=item, annotator=annotator, labels=["neutral"], client_uuid=uuid.uuid4())
    late = annotation_submit(
        item=item, annotator=annotator, labels=["positive"], client_uuid=original
    )
    assert late.changed is False
    assert Annotation.objects.get().labels == ["neutral"]
    assert counts(project, item) == (1, 1, False, 1, 1)


def test_a_resent_edit_is_applied_once(project, annotator):
    item, edit = first_item(project, annotator), uuid.uuid4()
    annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4())
    for _ in range(3):
        annotation_submit(item=item, annotator=annotator, labels=["negative"], client_uuid=edit)
    assert counts(project, item) == (1, 1, False, 1, 1)


def test_a_submission_id_cannot_be_reused_for_another_item(project, annotator):
    a, b = Item.objects.select_related("project").filter(project=project).order_by("id")[:2]
    hand_out(a, annotator)
    hand_out(b, annotator)
    sid = uuid.uuid4()
    annotation_submit(item=a, annotator=annotator, labels=["positive"], client_uuid=sid)
    with pytest.raises(ValidationError, match="already used"):
        annotation_submit(item=b, annotator=annotator, labels=["positive"], client_uuid=sid)
    assert not Annotation.objects.filter(item=b).exists()


def test_editing_from_the_history_updates_in_place_and_logs_a_revision(client, project, annotator):
    client.force_login(annotator)
    item = first_item(project, annotator)
    url = reverse("annotate_submit", args=[project.pk])
    client.post(url, {"item": item.pk, "labels": ["positive"], "client_uuid": str(uuid.uuid4())})
    original = Annotation.objects.get()
    reopened = client.get(
        reverse("annotate_item", args=[project.pk, item.pk]), HTTP_HX_REQUEST="true"
    )
    assert reopened.status_code == 200
    assert 'data-labels="[&quot;positive&quot;]"' in reopened.content.decode()
    response = client.post(
        url, {"item": item.pk, "labels": ["negative"], "client_uuid": str(uuid.uuid4())}
    )
    assert response.status_code == 200
    edited = Annotation.objects.get()
    assert edited.pk == original.pk
    assert edited.labels == ["negative"]
    revision = AnnotationRevision.objects.get()
    assert (revision.annotation_id, revision.previous_labels, revision.labels) == (
        original.pk,
        ["positive"],
        ["negative"],
    )
    assert counts(project, item) == (1, 1, False, 1, 1)
    assert "negative" in response.content.decode()  # the history strip shows the new answer


def test_turning_a_skip_into_an_answer_and_back_moves_the_counters(project, annotator):
    item = first_item(project, annotator)
    annotation_submit(
        item=item, annotator=annotator, labels=[], skipped=True, client_uuid=uuid.uuid4()
    )
    assert counts(project, item) == (1, 0, True, 0, 0)
    annotation_submit(item=item, annotator=annotator, labels=["neutral"], client_uuid=uuid.uuid4())
    assert counts(project, item) == (1, 1, False, 1, 1)
    annotation_submit(
        item=item, annotator=annotator, labels=[], skipped=True, client_uuid=uuid.uuid4()
    )
    assert counts(project, item) == (1, 2, True, 0, 0)


def test_labels_are_stored_in_schema_order_in_a_multi_label_project(db, annotator):
    project = project_create(name="Topics", labeling_mode="multi", classes=["a", "b", "c"])
    (item,) = add_text_items(project, ["x"])
    item = Item.objects.select_related("project").get(pk=item.pk)
    hand_out(item, annotator)
    result = annotation_submit(
        item=item, annotator=annotator, labels=["c", "a"], client_uuid=uuid.uuid4()
    )
    assert result.annotation.labels == ["a", "c"]


# --- Bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "skipped", "message"),
    [
        (["bogus"], False, "Unknown label(s) 'bogus'"),
        (["positive", "negative"], False, "Choose exactly one label"),
        ([], False, "Choose exactly one label"),
        (["positive", "positive"], False, "given twice"),
        (["positive"], True, "A skipped item carries no labels"),
        ("positive", False, "must be a list"),
        ([1], False, "must be a list"),
    ],
)
def test_bad_labels_are_refused_with_a_clear_message_and_change_nothing(
    project, annotator, labels, skipped, message
):
    item = first_item(project)
    queue.next_items(project=project, user=annotator, count=1)
    with pytest.raises(ValidationError) as info:
        annotation_submit(
            item=item, annotator=annotator, labels=labels, skipped=skipped, client_uuid=uuid.uuid4()
        )
    assert message in " ".join(info.value.message_dict["labels"])
    assert counts(project, item) == (0, 0, True, 0, 0)
    assert ItemLease.objects.filter(item=item, user=annotator).exists(), "the lease is kept"


def test_a_bad_edit_leaves_the_stored_answer_alone(project, annotator):
    item = first_item(project, annotator)
    annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4())
    with pytest.raises(ValidationError):
        annotation_submit(
            item=item, annotator=annotator, labels=["positive", "neutral"], client_uuid=uuid.uuid4()
        )
    assert Annotation.objects.get().labels == ["positive"]
    assert counts(project, item) == (1, 0, False, 1, 1)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"labels": ["bogus"]}, "labels", "bogus"),
        ({"labels": ["positive", "negative"]}, "labels", "exactly one label"),
        ({"labels": ["positive"], "skipped": "on"}, "labels", "no labels"),
        ({"labels": ["positive"], "client_uuid": "not-a-uuid"}, "client_uuid", "UUID"),
        ({"labels": ["positive"], "item": "abc"}, "item", "number"),
        ({"labels": ["positive"], "exclude": "1,x"}, "exclude", "not an item id"),
        ({"labels": ["positive"], "want": "99"}, "want", "less than or equal"),
    ],
)
def test_the_submit_endpoint_answers_bad_input_with_422_json(
    client, project, annotator, data, field, message
):
    client.force_login(annotator)
    item = first_item(project)
    body = {"item": item.pk, "client_uuid": str(uuid.uuid4()), **data}
    response = client.post(reverse("annotate_submit", args=[project.pk]), body)
    assert response.status_code == 422
    assert response["Content-Type"] == "application/json"
    errors = json.loads(response.content)["errors"]
    assert field in errors, errors
    assert message in json.dumps(errors), errors
    assert counts(project, item) == (0, 0, True, 0, 0)


def test_the_submit_endpoint_refuses_an_item_of_another_project(
    client, project, other_project, annotator
):
    client.force_login(annotator)
    foreign = other_project.items.get()
    response = client.post(
        reverse("annotate_submit", args=[project.pk]),
        {"item": foreign.pk, "labels": ["positive"], "client_uuid": str(uuid.uuid4())},
    )
    assert response.status_code == 404
    assert not Annotation.objects.exists()


def test_the_submit_endpoint_answers_with_the_next_items_and_progress(client, project, annotator):
    client.force_login(annotator)
    page = client.get(reverse("annotate", args=[project.pk]))
    current, ahead = (c["item"] for c in page.context["cards"])
    response = client.post(
        reverse("annotate_submit", args=[project.pk]),
        {
            "item": current.pk,
            "labels": ["neutral"],
            "client_uuid": str(uuid.uuid4()),
            "exclude": str(ahead.pk),
            "want": "1",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    (card,) = (int(x) for x in re.findall(r'<article class="card" data-item-id="(\d+)"', html))
    assert card not in (current.pk, ahead.pk)
    assert re.search(r"data-progress-complete>1<", html), "the progress panel counts the answer"
    assert re.search(r"data-progress-mine>1<", html)
    assert not ItemLease.objects.filter(item=current).exists(), "the answered item's lease is freed"


def test_a_history_link_without_javascript_opens_the_full_page_at_that_item(
    client, project, annotator
):
    client.force_login(annotator)
    item = first_item(project, annotator)
    annotation_submit(item=item, annotator=annotator, labels=["neutral"], client_uuid=uuid.uuid4())
    response = client.get(reverse("annotate_item", args=[project.pk, item.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert f'data-item-id="{item.pk}"' in html
    assert "editing your answer" in html
    assert "No more items" not in html


def test_an_item_never_handed_to_the_annotator_cannot_be_opened(client, project, annotator):
    client.force_login(annotator)
    item = first_item(project)
    response = client.get(reverse("annotate_item", args=[project.pk, item.pk]))
    assert response.status_code == 404


@pytest.mark.postgres
def test_answers_carry_no_index_that_nothing_reads(db):
    """`annotation_changed_idx` served the trainer's catch-up before it read gold labels
    (`gold_changed_idx`); kept, it only cost a write on every submission."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", [Annotation._meta.db_table]
        )
        names = {row[0] for row in cursor.fetchall()}
    assert "annotation_hist_idx" in names  # the query is right: it sees the table's indexes
    assert "annotation_changed_idx" not in names


# --- Only what the queue handed out ------------------------------------------------------------


def stored(project: Project) -> tuple[int, int]:
    """(answers in the project, items complete)."""
    project.refresh_from_db()
    return Annotation.objects.filter(project=project).count(), project.complete_count


def test_an_item_leased_to_someone_else_cannot_be_answered(project, annotator, reviewer):
    (held,) = queue.next_items(project=project, user=annotator, count=1)
    with pytest.raises(SubmissionRefused, match="not handed to you"):
        annotation_submit(item=held, annotator=reviewer, labels=["positive"], client_uuid=uuid4())
    assert stored(project) == (0, 0)
    assert ItemLease.objects.filter(item=held, user=annotator).exists(), "the holder keeps it"
    annotation_submit(item=held, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    assert stored(project) == (1, 1)


def test_an_item_never_handed_out_cannot_be_answered(project, annotator):
    queue.next_items(project=project, user=annotator, count=1)
    last = Item.objects.filter(project=project).order_by("-priority").last()  # the queue's tail
    with pytest.raises(SubmissionRefused, match="not handed to you"):
        annotation_submit(item=last, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    assert stored(project) == (0, 0)


def test_an_item_that_has_all_its_answers_takes_no_more(project, annotator, reviewer):
    project = project_set_overlap(project, 2)
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    assert queue.next_items(project=project, user=reviewer, count=1) == [item]
    annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    project = project_set_overlap(project, 1)  # one answer is enough now: the item is complete
    with pytest.raises(SubmissionRefused, match="already has all the answers"):
        annotation_submit(item=item, annotator=reviewer, labels=["negative"], client_uuid=uuid4())
    assert stored(project) == (1, 1)


def test_a_skip_cannot_become_an_answer_once_others_completed_the_item(
    project, annotator, reviewer
):
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    annotation_submit(item=item, annotator=annotator, labels=[], skipped=True, client_uuid=uuid4())
    assert queue.next_items(project=project, user=reviewer, count=1) == [item]
    annotation_submit(item=item, annotator=reviewer, labels=["negative"], client_uuid=uuid4())
    with pytest.raises(SubmissionRefused, match="since you skipped it"):
        annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    item.refresh_from_db()
    assert item.annotation_count == 1
    assert Annotation.objects.get(item=item, annotator=annotator).skipped


def test_an_expired_lease_still_counts_while_no_one_else_took_the_item(
    project, annotator, reviewer
):
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    ItemLease.objects.filter(item=item).update(expires_at=timezone.now() - timedelta(seconds=1))
    annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    assert stored(project) == (1, 1)


def test_an_expired_lease_no_longer_counts_once_another_annotator_holds_the_item(
    project, annotator, reviewer
):
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    ItemLease.objects.filter(item=item).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert queue.next_items(project=project, user=reviewer, count=1) == [item]
    with pytest.raises(SubmissionRefused, match="expired and another annotator has it"):
        annotation_submit(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid4())
    assert stored(project) == (0, 0)


def test_the_annotate_page_answers_a_refused_item_with_409_and_the_reason(
    client, project, annotator, reviewer
):
    (held,) = queue.next_items(project=project, user=reviewer, count=1)
    client.force_login(annotator)
    response = client.post(
        reverse("annotate_submit", args=[project.pk]),
        {"item": held.pk, "labels": ["positive"], "client_uuid": str(uuid4()), "want": "1"},
    )
    # annotate.js shows a 4xx's message, drops the answer from its outbox and moves on; only
    # 5xx, 429 and network errors are retried.
    assert response.status_code == 409
    assert response["Content-Type"] == "application/json"
    assert "not handed to you" in json.loads(response.content)["errors"]["item"][0]
    assert stored(project) == (0, 0)


def test_a_resend_after_the_first_submission_released_the_lease_is_still_accepted(
    client, project, annotator
):
    client.force_login(annotator)
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    body = {"item": item.pk, "labels": ["positive"], "client_uuid": str(uuid4())}
    url = reverse("annotate_submit", args=[project.pk])
    assert client.post(url, body).status_code == 200
    assert not ItemLease.objects.filter(item=item).exists()
    assert client.post(url, body).status_code == 200  # the response was lost; the page resends
    assert stored(project) == (1, 1)
