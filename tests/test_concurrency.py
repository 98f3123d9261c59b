"""Many annotators at once on PostgreSQL: every item labelled exactly as often as the overlap
asks, none lost, none twice, and no item ever handed to two annotators at the same time."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict

import pytest
from django.db import connection
from django.db.models import Count

from annotations import queue
from annotations.models import Annotation, Item, ItemLease, Membership, Project
from annotations.project_settings import project_settings_update
from annotations.services import SubmissionRefused, annotation_submit, project_create
from tests.conftest import add_text_items, make_user

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


class Ledger:
    """Who holds which item right now, by the annotators' own account. With overlap 1 an item
    handed to one annotator while another still holds it is a double hand-out."""

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self.lock = threading.Lock()
        self.holders: dict[int, set[int]] = defaultdict(set)
        self.handed: dict[int, set[int]] = defaultdict(set)
        self.clashes: list[str] = []

    def hand_out(self, user_id: int, item_ids: list[int]) -> None:
        with self.lock:
            for item_id in item_ids:
                holders = self.holders[item_id] | {user_id}
                if len(holders) > self.overlap:
                    self.clashes.append(f"item {item_id} held by {sorted(holders)} at once")
                self.holders[item_id] = holders
                self.handed[item_id].add(user_id)

    def give_back(self, user_id: int, item_id: int) -> None:
        with self.lock:
            self.holders[item_id].discard(user_id)


def annotate_until_dry(project: Project, user, ledger: Ledger, done: Counter) -> None:
    while True:
        items = queue.next_items(project=project, user=user, count=2)
        if not items:
            return
        ledger.hand_out(user.pk, [i.pk for i in items])
        item = items[0]
        item.project = project
        ledger.give_back(user.pk, item.pk)  # before the submit commits: the ledger never lags
        annotation_submit(item=item, annotator=user, labels=["a"], client_uuid=uuid.uuid4())
        done[user.pk] += 1


def run_annotators(project: Project, users: list, ledger: Ledger) -> tuple[Counter, list]:
    barrier = threading.Barrier(len(users))
    done: Counter = Counter()
    errors: list[BaseException] = []

    def work(user) -> None:
        try:
            barrier.wait(timeout=30)
            annotate_until_dry(project, user, ledger, done)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "an annotator thread hung"
    return done, errors


def setup_project(*, items: int, annotators: int, overlap: int) -> tuple[Project, list]:
    project = project_create(name=f"Crowd {overlap}", classes=["a", "b"], overlap=overlap)
    add_text_items(project, [f"text {i}" for i in range(items)])
    users = [make_user(f"crowd{i}") for i in range(annotators)]
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in users]
    )
    project.refresh_from_db()
    return project, users


def test_twenty_annotators_label_five_hundred_items_each_exactly_once():
    project, users = setup_project(items=500, annotators=20, overlap=1)
    ledger = Ledger(overlap=1)
    started = time.monotonic()
    done, errors = run_annotators(project, users, ledger)
    elapsed = time.monotonic() - started

    assert not errors, errors
    assert not ledger.clashes, ledger.clashes[:5]
    per_item = Counter(
        dict(
            Annotation.objects.values_list("item").annotate(n=Count("id")).values_list("item", "n")
        )
    )
    item_ids = set(Item.objects.filter(project=project).values_list("pk", flat=True))
    assert set(per_item) == item_ids, f"{len(item_ids - set(per_item))} items never labelled"
    assert set(per_item.values()) == {1}, "an item was labelled twice"
    assert all(len(holders) == 1 for holders in ledger.handed.values()), "handed to two"
    assert sum(done.values()) == 500
    assert len(done) > 1, "only one annotator got work: the test ran serially"
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (500, 500)
    assert not Item.objects.filter(project=project, needs_annotation=True).exists()
    assert not ItemLease.objects.exists(), "every lease was released on submit"
    assert elapsed < 60, f"took {elapsed:.1f}s"


def test_ten_annotators_with_overlap_two_give_every_item_two_distinct_answers():
    project, users = setup_project(items=100, annotators=10, overlap=2)
    ledger = Ledger(overlap=2)
    done, errors = run_annotators(project, users, ledger)

    assert not errors, errors
    assert not ledger.clashes, ledger.clashes[:5]
    rows = list(Annotation.objects.values_list("item_id", "annotator_id"))
    per_item = Counter(item for item, _ in rows)
    assert len(rows) == len(set(rows)), "an annotator answered an item twice"
    assert set(per_item.values()) == {2} and len(per_item) == 100
    project.refresh_from_db()
    assert project.complete_count == 100


def test_changing_the_overlap_while_annotators_submit_neither_deadlocks_nor_miscounts():
    """Settings lock the project and then rewrite its items; a submission locks its item and
    then moves the project's counters. One lock order (`annotations.locks`) keeps them apart."""
    project, users = setup_project(items=100, annotators=4, overlap=2)
    admin = make_user("boss")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    settings_done = threading.Event()
    errors: list[BaseException] = []
    refused: Counter = Counter()
    barrier = threading.Barrier(len(users) + 1)

    def annotate(user) -> None:
        try:
            barrier.wait(timeout=30)
            while True:
                items = queue.next_items(project=project, user=user, count=1)
                if not items:
                    if settings_done.is_set():
                        return
                    settings_done.wait(timeout=60)  # the overlap may go up again
                    continue
                try:
                    annotation_submit(
                        item=items[0], annotator=user, labels=["a"], client_uuid=uuid.uuid4()
                    )
                except SubmissionRefused:
                    refused[user.pk] += 1  # the overlap went down under its lease: expected
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    def change_settings() -> None:
        try:
            barrier.wait(timeout=30)
            for overlap in [1, 2] * 5:
                project_settings_update(project=project, values={"overlap": overlap})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            settings_done.set()
            connection.close()

    threads = [threading.Thread(target=annotate, args=(u,)) for u in users]
    threads.append(threading.Thread(target=change_settings))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors

    project.refresh_from_db()
    assert project.overlap == 2
    answers = Counter(
        Annotation.objects.filter(project=project, skipped=False).values_list("item_id", flat=True)
    )
    items = list(Item.objects.filter(project=project))
    assert {i.pk: i.annotation_count for i in items} == {i.pk: answers[i.pk] for i in items}
    assert {i.pk: i.needs_annotation for i in items} == {i.pk: answers[i.pk] < 2 for i in items}
    assert max(answers.values()) <= 2, "an item got more answers than the overlap"
    assert (project.item_count, project.complete_count) == (100, 100)
