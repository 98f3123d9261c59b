"""The annotation queue: who gets which item, leases, overlap, skips, and the index behind it."""

from __future__ import annotations

import re
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotations import queue
from annotations.models import Annotation, Item, ItemLease, Membership, Project
from annotations.services import annotation_submit, project_create, project_set_overlap
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def member(project: Project, username: str, role: str = Membership.Role.ANNOTATOR):
    user = make_user(username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def label(item: Item, user, labels=("positive",), *, skipped: bool = False) -> Annotation:
    return submit_handed_out(
        item=item,
        annotator=user,
        labels=[] if skipped else list(labels),
        skipped=skipped,
        client_uuid=uuid.uuid4(),
    ).annotation


def ids(items: list[Item]) -> list[int]:
    return [i.pk for i in items]


def page_text(response) -> str:
    """The visible text of a response: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def expire_leases(**filters) -> None:
    ItemLease.objects.filter(**filters).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_an_annotator_labels_every_item_once_and_the_queue_ends_empty(project, annotator):
    seen: list[int] = []
    for _ in range(project.item_count):
        (item,) = queue.next_items(project=project, user=annotator, count=1)
        assert item.pk not in seen, f"item {item.external_id} was shown again after labelling"
        seen.append(item.pk)
        label(item, annotator)
    assert len(set(seen)) == 20
    assert queue.next_items(project=project, user=annotator, count=3) == []
    project.refresh_from_db()
    assert project.complete_count == 20
    assert not ItemLease.objects.filter(user=annotator).exists()


def test_items_come_in_priority_order(project, annotator):
    project.items.filter(external_id="t7").update(priority=5.0)
    first, second = queue.next_items(project=project, user=annotator, count=2)
    assert (first.external_id, second.external_id) == ("t7", "t0")


def test_two_annotators_never_hold_the_same_item_while_leases_are_live(project, annotator):
    other = member(project, "bob")
    held = {
        annotator.pk: set(ids(queue.next_items(project=project, user=annotator, count=3))),
        other.pk: set(ids(queue.next_items(project=project, user=other, count=3))),
    }
    assert len(held[annotator.pk]) == len(held[other.pk]) == 3
    assert not held[annotator.pk] & held[other.pk]
    # Keep going turn by turn until the queue is dry: never an item the other one holds.
    users = {annotator.pk: annotator, other.pk: other}
    labelled: list[int] = []
    while True:
        progressed = False
        for uid, user in users.items():
            mine = queue.next_items(project=project, user=user, count=3)
            theirs = next(h for k, h in held.items() if k != uid)
            assert not set(ids(mine)) & theirs, "an item leased to the other annotator was served"
            held[uid] = set(ids(mine))
            if mine:
                label(mine[0], user)
                labelled.append(mine[0].pk)
                held[uid].discard(mine[0].pk)
                progressed = True
        if not progressed:
            break
    assert sorted(labelled) == sorted(project.items.values_list("pk", flat=True))


def test_an_expired_lease_puts_the_item_back_in_the_queue(project, annotator):
    other = member(project, "bob")
    taken = queue.next_items(project=project, user=annotator, count=2)
    assert not set(ids(taken)) & set(ids(queue.next_items(project=project, user=other, count=2)))
    ItemLease.objects.filter(user=other).delete()
    expire_leases(user=annotator)
    assert ids(queue.next_items(project=project, user=other, count=2)) == ids(taken)


def test_a_short_lease_time_expires_by_itself(project, annotator, settings):
    settings.LEASE_SECONDS = 0
    other = member(project, "bob")
    taken = queue.next_items(project=project, user=annotator, count=1)
    assert ids(queue.next_items(project=project, user=other, count=1)) == ids(taken)


def test_a_reload_or_second_tab_gets_the_same_items_without_new_leases(project, annotator):
    first = queue.next_items(project=project, user=annotator, count=2)
    leases = list(ItemLease.objects.order_by("item_id").values_list("item_id", "created_at"))
    second_tab = queue.next_items(project=project, user=annotator, count=2)
    assert ids(second_tab) == ids(first)
    assert list(ItemLease.objects.order_by("item_id").values_list("item_id", "created_at")) == (
        leases
    )


def test_a_reload_after_labelling_one_keeps_the_other_and_leases_one_more(project, annotator):
    a, b = queue.next_items(project=project, user=annotator, count=2)
    label(a, annotator)
    again = queue.next_items(project=project, user=annotator, count=2)
    assert again[0].pk == b.pk
    assert again[1].pk not in (a.pk, b.pk)
    assert ItemLease.objects.filter(user=annotator).count() == 2


def test_exclude_fetches_items_the_page_does_not_hold_yet(project, annotator):
    shown = queue.next_items(project=project, user=annotator, count=2)
    ahead = queue.next_items(
        project=project, user=annotator, count=2, exclude=frozenset(ids(shown))
    )
    assert len(ahead) == 2
    assert not set(ids(ahead)) & set(ids(shown))
    assert ItemLease.objects.filter(user=annotator).count() == 4


def test_renew_extends_live_leases_and_leaves_expired_ones(project, annotator, settings):
    settings.LEASE_SECONDS = 300
    live, stale = queue.next_items(project=project, user=annotator, count=2)
    soon = timezone.now() + timedelta(seconds=5)
    ItemLease.objects.filter(item=live).update(expires_at=soon)
    expire_leases(item=stale)
    assert queue.renew_leases(project=project, user=annotator) == 1
    renewed = ItemLease.objects.get(item=live).expires_at
    assert renewed > timezone.now() + timedelta(seconds=290)
    assert ItemLease.objects.get(item=stale).expires_at < timezone.now()


def test_the_heartbeat_endpoint_renews_the_leases(client, project, annotator):
    client.force_login(annotator)
    queue.next_items(project=project, user=annotator, count=2)
    ItemLease.objects.update(expires_at=timezone.now() + timedelta(seconds=3))
    response = client.post(reverse("annotate_heartbeat", args=[project.pk]))
    assert response.status_code == 204
    assert response["X-Leases-Renewed"] == "2"
    assert (
        ItemLease.objects.filter(expires_at__lt=timezone.now() + timedelta(seconds=60)).count() == 0
    )


def test_with_overlap_two_an_item_goes_to_two_annotators_then_leaves_the_queue(project, annotator):
    project_set_overlap(project, 2)
    project.refresh_from_db()
    bob, carol = member(project, "bob"), member(project, "carol")
    (first,) = queue.next_items(project=project, user=annotator, count=1)
    (same,) = queue.next_items(project=project, user=bob, count=1)
    assert same.pk == first.pk, "with overlap 2 the second annotator gets the same top item"
    (third,) = queue.next_items(project=project, user=carol, count=1)
    assert third.pk != first.pk, "two live leases fill both slots of the item"
    label(first, annotator)
    first.refresh_from_db()
    assert first.needs_annotation
    label(same, bob)
    first.refresh_from_db()
    assert (first.annotation_count, first.needs_annotation) == (2, False)
    project.refresh_from_db()
    assert project.complete_count == 1
    ItemLease.objects.filter(user=carol).delete()
    served = set()
    for _ in range(5):
        served |= set(ids(queue.next_items(project=project, user=carol, count=4)))
        ItemLease.objects.filter(user=carol).delete()
    assert first.pk not in served


def test_with_overlap_two_an_item_labelled_once_still_has_a_slot(project, annotator):
    project_set_overlap(project, 2)
    project.refresh_from_db()
    bob, carol = member(project, "bob"), member(project, "carol")
    (first,) = queue.next_items(project=project, user=annotator, count=1)
    label(first, annotator)
    (for_bob,) = queue.next_items(project=project, user=bob, count=1)
    assert for_bob.pk == first.pk
    (for_carol,) = queue.next_items(project=project, user=carol, count=1)
    assert for_carol.pk != first.pk, "one answer + one live lease fill both slots"


def test_waiting_on_leases_counts_the_items_others_hold(project, annotator):
    other = member(project, "bob")
    queue.next_items(project=project, user=other, count=3)
    mine = queue.next_items(project=project, user=annotator, count=2)
    status = queue.queue_status(project=project, user=annotator, with_waiting=True)
    assert status.waiting_on_leases == 3
    assert queue.queue_status(project=project, user=annotator).waiting_on_leases == 0
    label(mine[0], annotator)
    project.refresh_from_db()
    status = queue.queue_status(project=project, user=annotator, with_waiting=True)
    assert (status.total, status.complete, status.mine, status.remaining) == (20, 1, 1, 19)
    expire_leases(user=other)
    assert (
        queue.queue_status(project=project, user=annotator, with_waiting=True).waiting_on_leases
        == 0
    )


def test_a_skipped_item_goes_to_another_annotator_but_not_back_to_the_skipper(project, annotator):
    other = member(project, "bob")
    (hard,) = queue.next_items(project=project, user=annotator, count=1)
    label(hard, annotator, skipped=True)
    hard.refresh_from_db()
    assert (hard.annotation_count, hard.needs_annotation) == (0, True)
    later = queue.next_items(project=project, user=annotator, count=5)
    assert hard.pk not in ids(later)
    assert ids(queue.next_items(project=project, user=other, count=1)) == [hard.pk]
    # The skipper's own queue drains without ever seeing it again.
    ItemLease.objects.filter(user=other).delete()
    seen = set()
    while batch := queue.next_items(project=project, user=annotator, count=3):
        seen |= set(ids(batch))
        for item in batch:
            label(item, annotator)
    assert hard.pk not in seen
    assert len(seen) == 19


def _small_project(*names: str) -> tuple[Project, list]:
    p = project_create(name="Tiny", classes=["yes", "no"])
    add_text_items(p, ["one", "two"])
    return p, [member(p, n) for n in names]


def test_the_empty_queue_page_says_how_many_items_wait_on_other_annotators(client, db):
    project, (alice, bob) = _small_project("alice", "bob")
    client.force_login(alice)
    assert len(client.get(reverse("annotate", args=[project.pk])).context["cards"]) == 2
    client.force_login(bob)
    page = client.get(reverse("annotate", args=[project.pk]))
    html = page_text(page)
    assert page.context["cards"] == []
    assert "No more items for you right now" in html
    assert "2 items are being labelled by other annotators" in html
    partial = page_text(client.get(reverse("annotate_next", args=[project.pk]), {"count": 1}))
    assert "No more items for you right now" in partial
    assert "2 items are being labelled" in partial


def test_the_empty_queue_page_says_everything_is_done(client, db):
    project, (alice,) = _small_project("alice")
    for item in project.items.all():
        label(item, alice, ["yes"])
    client.force_login(alice)
    html = page_text(client.get(reverse("annotate", args=[project.pk])))
    assert "No more items for you right now" in html
    assert "Every item of this project that you can label is done" in html
    assert "being labelled by other annotators" not in html


@pytest.mark.postgres
def test_next_items_locks_candidates_with_skip_locked_on_postgresql(project, annotator):
    with CaptureQueriesContext(connection) as captured:
        queue.next_items(project=project, user=annotator, count=2)
    locking = [q["sql"] for q in captured if re.search(r"FOR (NO KEY )?UPDATE", q["sql"])]
    assert locking, "no candidate query locks rows"
    assert all("SKIP LOCKED" in sql for sql in locking)


class RowHolder:
    """Another connection that locks rows of the item table in an open transaction, as the
    trainer's priority update does for the ranked head, until someone waits on them (or
    `patience` seconds pass)."""

    def __init__(self, item_ids: list[int], mode: str, patience: float = 10.0) -> None:
        self.item_ids, self.mode, self.patience = item_ids, mode, patience
        self.locked = threading.Event()
        self.waited_on = False
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run)

    def __enter__(self) -> RowHolder:
        self.thread.start()
        assert self.locked.wait(timeout=30), "the rows were never locked"
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive() and not self.errors, self.errors

    def run(self) -> None:
        table = Item._meta.db_table
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id {self.mode}",
                    [self.item_ids],
                )
                cursor.execute("SELECT pg_backend_pid()")
                (me,) = cursor.fetchone()
                self.locked.set()
                # Release the rows as soon as another backend waits for them: the event a
                # trainer's commit would be.
                deadline = time.monotonic() + self.patience
                while time.monotonic() < deadline:
                    cursor.execute(
                        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
                        "WHERE %s = ANY(pg_blocking_pids(pid)))",
                        [me],
                    )
                    if cursor.fetchone()[0]:
                        self.waited_on = True
                        break
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.errors.append(exc)
        finally:
            connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_queue_is_not_empty_while_others_hold_every_open_item_locked(annotator, project):
    """On a small project the trainer's re-rank locks every open item for a moment; the API
    must still hand out an item (after that moment) rather than say the queue is empty."""
    open_ids = list(Item.objects.filter(project=project).values_list("pk", flat=True))
    client = APIClient()
    client.force_authenticate(annotator)
    url = reverse("api-next-items", args=[project.pk])
    with RowHolder(open_ids, "FOR NO KEY UPDATE") as holder:
        response = client.get(url, {"count": 2})
    assert response.status_code == 200
    assert len(response.json()["results"]) == 2
    assert holder.waited_on, "it waited for the lock rather than answering empty"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_foreign_key_check_in_flight_does_not_hide_items_from_the_queue(annotator, project):
    """Inserting rows that point at items (leases, answers, features) takes FOR KEY SHARE on
    them; the queue's lock must not conflict with it, nor wait for it."""
    open_ids = list(Item.objects.filter(project=project).values_list("pk", flat=True))
    with RowHolder(open_ids, "FOR KEY SHARE", patience=2.0) as holder:
        items = queue.next_items(project=project, user=annotator, count=2)
        assert len(items) == 2
    assert not holder.waited_on


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_queue_that_is_truly_empty_answers_empty_at_once(project, annotator):
    for item in project.items.all():
        label(item, annotator)
    started = time.monotonic()
    assert queue.next_items(project=project, user=annotator, count=2) == []
    assert time.monotonic() - started < 1.0


@pytest.mark.postgres
@pytest.mark.parametrize("overlap", [1, 3])
def test_the_next_item_query_is_one_walk_of_the_partial_queue_index(db, overlap):
    project = project_create(name="Big", classes=["a", "b"], overlap=overlap)
    other = project_create(name="Neighbour", classes=["a"])
    add_text_items(project, [f"text {i}" for i in range(20_000)])
    add_text_items(other, [f"other {i}" for i in range(2_000)], prefix="n")
    users = [member(project, f"u{i}") for i in range(3)]
    # Some history, so the anti-joins have rows to look at.
    for user in users:
        for item in queue.next_items(project=project, user=user, count=3):
            label(item, user, ["a"])
        queue.next_items(project=project, user=user, count=2)
    Item.objects.filter(project=project, external_id__in=[f"t{i}" for i in range(500)]).update(
        needs_annotation=False
    )
    with connection.cursor() as cursor:
        for model in (Item, Annotation, ItemLease):
            cursor.execute(f"ANALYZE {model._meta.db_table}")
    qs = queue.open_items_for(project, users[0], timezone.now())[:3]
    plan = qs.explain()
    item_table = Item._meta.db_table
    assert "Index Scan using item_queue_idx" in plan, plan
    assert not re.search(rf"Seq Scan on {item_table}\b", plan), plan
    assert "Sort" not in plan, plan


@pytest.mark.parametrize("overlap", [1, 2])
def test_the_plain_sql_queue_returns_exactly_what_the_orm_definition_does(db, overlap):
    """`queue._open_items_sql` is the fast copy of `queue.open_items_for`; they must agree."""
    project = project_create(name=f"Spec {overlap}", classes=["positive", "b"], overlap=overlap)
    items = add_text_items(project, [f"text {i}" for i in range(12)])
    me, other, third = (member(project, name) for name in ("me", "other", "third"))
    now = timezone.now()
    label(items[0], me)
    label(items[1], me, skipped=True)
    label(items[2], other)
    label(items[3], other)
    if overlap > 1:
        label(items[3], third)
    for item, user, delta in [
        (items[4], other, 60),
        (items[5], other, -60),  # expired
        (items[6], me, 60),  # my own lease
        (items[7], other, 60),
        (items[7], third, 60),
        (items[8], third, 60),
    ]:
        ItemLease.objects.create(
            project=project,
            item=item,
            user=user,
            created_at=now,
            expires_at=now + timedelta(seconds=delta),
        )
    for user in (me, other, third):
        sql, params = queue._open_items_sql(project, user, now, "i.id")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            plain = {row[0] for row in cursor.fetchall()}
        orm = set(queue.open_items_for(project, user, now).values_list("pk", flat=True))
        assert plain == orm, user.username
        assert len(orm) >= 3


def test_answering_keeps_others_leases_while_the_item_is_open_and_drops_all_once_complete(
    project, annotator
):
    """A holder whose lease expired may still answer while the item is open
    (`services._check_handed_out`), so only completion, or the hourly purge, drops it."""
    project = project_set_overlap(project, 3)
    other, third = member(project, "other"), member(project, "third")
    item = queue.next_items(project=project, user=annotator, count=1)[0]
    now = timezone.now()
    ItemLease.objects.create(
        project=project,
        item=item,
        user=other,
        created_at=now,
        expires_at=now - timedelta(seconds=1),
    )
    assert queue.next_items(project=project, user=third, count=1) == [item]
    label(item, annotator)
    holders = ItemLease.objects.filter(item=item).values_list("user__username", flat=True)
    assert sorted(holders) == ["other", "third"]
    label(item, third)
    # Expired, but the slot it reserved is still free (not `label`: that would lease it anew).
    annotation_submit(item=item, annotator=other, labels=["positive"], client_uuid=uuid.uuid4())
    item.refresh_from_db()
    assert not item.needs_annotation
    assert not ItemLease.objects.filter(item=item).exists()
