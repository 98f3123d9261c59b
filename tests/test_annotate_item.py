"""Opening an item again (the history strip, Backspace) while its answer is being committed:
the annotator always gets it, never a 404 in between (PostgreSQL, a real second transaction)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.urls import reverse

from annotations import queue
from annotations.services import annotation_submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_an_item_whose_answer_commits_while_it_is_opened_is_never_refused(
    client, project, annotator
):
    (item,) = queue.next_items(project=project, user=annotator, count=1)
    item.project = project
    stored = threading.Event()
    commit = threading.Event()
    committed = threading.Event()
    errors: list[BaseException] = []

    def submit_and_commit_when_told() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                annotation_submit(
                    item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4()
                )
                stored.set()
                assert commit.wait(10), "never told to commit"
            committed.set()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stored.set()
        finally:
            connection.close()

    worker = threading.Thread(target=submit_and_commit_when_told)
    worker.start()
    assert stored.wait(10)

    def commit_after_the_first_read_of_leases_or_answers(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not commit.is_set() and ("itemlease" in sql or "annotations_annotation" in sql):
            commit.set()  # the submission commits between the view's two reads
            assert committed.wait(10), "the submission did not commit"
        return result

    client.force_login(annotator)
    url = reverse("annotate_item", args=[project.pk, item.pk])
    with connection.execute_wrapper(commit_after_the_first_read_of_leases_or_answers):
        response = client.get(url, HTTP_HX_REQUEST="true")
    worker.join(10)

    assert not errors, errors
    assert commit.is_set() and committed.is_set()
    assert response.status_code == 200, response.content
    assert f'data-item-id="{item.pk}"' in response.content.decode()
