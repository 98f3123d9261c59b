"""Bulk actions on items (`annotations.bulk`): each action's effect and its record, the
relabelling round trip, and "all matching" racing concurrent submissions on PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from django.db import connection
from django.db.models import Count

from annotations import bulk, queue
from annotations.bulk import Selection
from annotations.models import (
    Annotation,
    DeletedItem,
    GoldLabel,
    Item,
    ItemAction,
    ItemAssignment,
    ItemRelabel,
    Membership,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import review_candidates, review_decide
from annotations.services import annotation_submit, project_create, project_recount
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def answer(item: Item, user, label: str = "positive") -> None:
    item.refresh_from_db()
    submit_handed_out(item=item, annotator=user, labels=[label], client_uuid=uuid.uuid4())


def counters_agree(project: Project) -> None:
    """The project's counters equal what a full recount computes."""
    project.refresh_from_db()
    before = (project.item_count, project.complete_count)
    state = dict(Item.objects.filter(project=project).values_list("pk", "needs_annotation"))
    recounted = project_recount(project)
    assert (recounted.item_count, recounted.complete_count) == before
    assert dict(Item.objects.filter(project=project).values_list("pk", "needs_annotation")) == (
        state
    )


# --- Send to review ---------------------------------------------------------------------------


def test_sending_picked_items_to_review_opens_one_review_each_and_records_who_and_why(
    project, reviewer
):
    items = list(Item.objects.filter(project=project).order_by("pk")[:3])
    result = bulk.items_send_to_review(
        project=project,
        user=reviewer,
        selection=Selection.of_ids(i.pk for i in items),
        reason=Review.Reason.LABEL_ERROR,
        note="look again",
    )
    assert result.done == 3
    reviews = Review.objects.filter(item__in=items)
    assert reviews.count() == 3
    assert all(r.reasons == ["label_error"] and r.flagged_by == reviewer for r in reviews)
    assert (
        ReviewEvent.objects.filter(review__in=reviews, action="flag", actor=reviewer).count() == 3
    )
    action = ItemAction.objects.get()
    assert (action.action, action.user, action.item_count, action.done_count) == (
        "review",
        reviewer,
        3,
        3,
    )
    assert action.params["reason"] == "label_error"
    assert action.params["items"] == sorted(i.pk for i in items)
    assert action.finished_at is not None


def test_sending_a_decided_item_to_review_reopens_it_and_keeps_the_decision_it_undid(
    project, annotator, reviewer
):
    item = Item.objects.filter(project=project).first()
    answer(item, annotator, "positive")
    review = bulk.items_send_to_review(
        project=project, user=reviewer, selection=Selection.of_ids([item.pk])
    ).done
    assert review == 1
    r = Review.objects.get(item=item)
    review_decide(project=project, review_id=r.pk, reviewer=reviewer, labels=["negative"])
    assert GoldLabel.objects.get(item=item).labels == ["negative"]

    bulk.items_send_to_review(
        project=project,
        user=reviewer,
        selection=Selection.of_ids([item.pk]),
        reason=Review.Reason.DUPLICATE,
    )
    r.refresh_from_db()
    assert r.status == "open" and r.reasons == ["flag", "duplicate"]
    assert GoldLabel.objects.get(item=item).labels == ["positive"]  # from the answers again
    assert ReviewEvent.objects.filter(review=r, action="flag").first().labels == ["negative"]


def test_an_analysis_sends_items_to_review_without_a_person(project):
    ids = list(Item.objects.filter(project=project).values_list("pk", flat=True)[:2])
    bulk.items_send_to_review(
        project=project, user=None, selection=Selection.of_ids(ids), reason="label_error"
    )
    assert ReviewEvent.objects.filter(actor=None).count() == 2
    assert ItemAction.objects.get().user is None


def test_sending_thousands_to_review_takes_a_few_queries_per_chunk(
    project, reviewer, django_assert_max_num_queries
):
    add_text_items(project, [f"more {i}" for i in range(2500)], prefix="m")
    seen: list[tuple[int, int]] = []
    # 3 chunks of at most 1,000 items; about ten queries each, whatever the chunk's size.
    with django_assert_max_num_queries(50):
        result = bulk.items_send_to_review(
            project=project,
            user=reviewer,
            selection=Selection.of_ids(
                Item.objects.filter(project=project).values_list("pk", flat=True)
            ),
            progress=lambda done, total: seen.append((done, total)),
        )
    assert result.done == 2520 == Review.objects.filter(project=project).count()
    assert seen == [(1000, 2520), (2000, 2520), (2520, 2520)]


def test_ids_of_another_project_refuse_the_whole_selection(project, other_project, reviewer):
    mine = Item.objects.filter(project=project).first()
    theirs = Item.objects.filter(project=other_project).first()
    with pytest.raises(Exception) as caught:
        bulk.items_send_to_review(
            project=project, user=reviewer, selection=Selection.of_ids([mine.pk, theirs.pk])
        )
    assert "items" in caught.value.message_dict
    assert not Review.objects.exists() and not ItemAction.objects.exists()


# --- Relabel ----------------------------------------------------------------------------------


def test_relabelling_reopens_complete_items_for_new_annotators_and_keeps_counters_exact(
    project, annotator
):
    item, untouched = Item.objects.filter(project=project).order_by("pk")[:2]
    answer(item, annotator, "positive")
    project.refresh_from_db()
    assert project.complete_count == 1

    result = bulk.items_relabel(
        project=project, user=annotator, selection=Selection.of_ids([item.pk, untouched.pk])
    )
    assert (result.done, result.skipped) == (1, 1)  # nobody answered `untouched` yet
    item.refresh_from_db()
    assert (item.needs_annotation, item.relabel_answers, item.answers_wanted(project)) == (
        True,
        1,
        2,
    )
    project.refresh_from_db()
    assert project.complete_count == 0
    counters_agree(project)
    # The gold label stays until the new answers are in.
    assert GoldLabel.objects.get(item=item).labels == ["positive"]
    relabel = ItemRelabel.objects.get(item=item)
    assert relabel.previous == [Annotation.objects.get(item=item).pk]
    # Served to someone who has not answered it, never again to who did.
    other = make_user("second")
    Membership.objects.create(project=project, user=other, role=Membership.Role.ANNOTATOR)
    from django.utils import timezone

    now = timezone.now()
    assert queue.open_items_for(project, other, now).filter(pk=item.pk).exists()
    assert not queue.open_items_for(project, annotator, now).filter(pk=item.pk).exists()


def test_relabel_round_trip_sends_the_item_to_review_with_both_generations_apart(
    project, annotator, reviewer, project_admin
):
    project.overlap = 1
    item = Item.objects.filter(project=project).first()
    answer(item, annotator, "positive")
    bulk.items_relabel(project=project, user=project_admin, selection=Selection.of_ids([item.pk]))

    newcomer = make_user("newcomer")
    Membership.objects.create(project=project, user=newcomer, role=Membership.Role.ANNOTATOR)
    served = queue.next_items(project=project, user=newcomer, count=20)
    assert item.pk in {i.pk for i in served}
    item.refresh_from_db()
    item.project = project
    annotation_submit(item=item, annotator=newcomer, labels=["negative"], client_uuid=uuid.uuid4())

    item.refresh_from_db()
    assert not item.needs_annotation and item.annotation_count == 2
    review = Review.objects.get(item=item)
    assert review.status == "open" and "relabel" in review.reasons
    assert review.flagged_by == project_admin
    assert ItemRelabel.objects.get(item=item).completed_at is not None
    candidates = review_candidates(review)
    assert [(c.who, c.earlier) for c in candidates] == [("annie", True), ("newcomer", False)]
    # The gold label now reflects both generations (a tie here, so none until decided).
    assert GoldLabel.objects.get(item=item).labels is None
    counters_agree(project)

    client_page = _reviewer_page(reviewer, project, review)
    assert 'data-generation="earlier"' in client_page and "before relabelling" in client_page


def _reviewer_page(user, project, review) -> str:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(user)
    response = client.get(reverse("review_detail", args=[project.pk, review.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_relabelling_an_assigned_item_returns_it_to_the_shared_queue(
    project, annotator, project_admin
):
    item = Item.objects.filter(project=project).first()
    bulk.items_assign(
        project=project,
        user=project_admin,
        selection=Selection.of_ids([item.pk]),
        users=[annotator],
    )
    answer(item, annotator)
    item.refresh_from_db()
    assert not item.needs_annotation and item.required_answers == 1
    result = bulk.items_relabel(
        project=project, user=project_admin, selection=Selection.of_ids([item.pk])
    )
    assert result.notes == ["1 assignment(s) removed."]
    item.refresh_from_db()
    assert (item.required_answers, item.relabel_answers, item.needs_annotation) == (None, 1, True)
    assert not ItemAssignment.objects.filter(item=item).exists()
    counters_agree(project)


# --- Assign and delete ------------------------------------------------------------------------


def test_assigning_a_selection_goes_through_the_assignment_service(
    project, annotator, project_admin
):
    ids = list(Item.objects.filter(project=project).values_list("pk", flat=True)[:4])
    result = bulk.items_assign(
        project=project, user=project_admin, selection=Selection.of_ids(ids), users=[annotator]
    )
    assert result.done == 4
    assert set(ItemAssignment.objects.values_list("item_id", flat=True)) == set(ids)
    assert ItemAction.objects.get().params["users"] == ["annie"]


def test_assigning_to_a_non_member_changes_nothing_and_records_nothing(
    project, outsider, project_admin
):
    ids = list(Item.objects.filter(project=project).values_list("pk", flat=True)[:2])
    with pytest.raises(Exception) as caught:
        bulk.items_assign(
            project=project, user=project_admin, selection=Selection.of_ids(ids), users=[outsider]
        )
    assert "users" in caught.value.message_dict
    assert not ItemAssignment.objects.exists() and not ItemAction.objects.exists()


def test_deleting_keeps_a_record_of_each_item_and_the_counters_follow(
    project, annotator, project_admin
):
    gone, kept = Item.objects.filter(project=project).order_by("pk")[:2]
    Item.objects.filter(pk=gone.pk).update(metadata={"source": "web"})
    answer(gone, annotator, "neutral")
    answer(kept, annotator, "neutral")
    result = bulk.items_delete_recorded(
        project=project, user=project_admin, selection=Selection.of_ids([gone.pk])
    )
    assert result.done == 1
    assert not Item.objects.filter(pk=gone.pk).exists()
    record = DeletedItem.objects.get()
    assert (record.external_id, record.text, record.metadata, record.answers) == (
        gone.external_id,
        gone.text,
        {"source": "web"},
        1,
    )
    assert record.gold == {"labels": ["neutral"], "source": "unanimous"}
    assert record.action.user == project_admin and record.action.action == "delete"
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (19, 1)
    counters_agree(project)


# --- Export -----------------------------------------------------------------------------------


def test_exporting_a_selection_writes_only_those_items_in_the_project_export_format(
    project, annotator, reviewer
):
    picked = list(Item.objects.filter(project=project).order_by("pk")[3:5])
    answer(picked[0], annotator, "negative")
    result, chunks = bulk.items_export(
        project=project,
        user=reviewer,
        selection=Selection.of_ids(i.pk for i in picked),
        fmt="jsonl",
    )
    lines = [json.loads(line) for line in "".join(chunks).splitlines()]
    assert [r["external_id"] for r in lines] == [i.external_id for i in picked]
    assert lines[0]["annotations"][0]["labels"] == ["negative"]
    assert result.action.action == "export" and result.action.item_count == 2
    _, csv_chunks = bulk.items_export(
        project=project, user=reviewer, selection=Selection.of_ids([picked[1].pk]), fmt="csv"
    )
    rows = "".join(csv_chunks).splitlines()
    assert rows[0].startswith("item_id,external_id") and len(rows) == 2


# --- "All matching" racing submissions on PostgreSQL -----------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["relabel", "review"])
def test_an_action_on_all_items_racing_submissions_loses_no_answer_and_passes_no_overlap(action):
    project = project_create(name=f"race {action}", classes=["a", "b"], overlap=1)
    add_text_items(project, [f"text {i}" for i in range(300)])
    first, *racers = [make_user(f"u{i}") for i in range(4)]
    for user in [first, *racers]:
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    # Half the items are complete before the action; the racers answer while it runs.
    for item in Item.objects.filter(project=project).order_by("pk")[:150]:
        item.project = project
        answer(item, first, "a")

    stored: list[uuid.UUID] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(racers) + 1)

    def annotate(user) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(40):
                items = queue.next_items(project=project, user=user, count=1)
                if not items:
                    break
                items[0].project = project
                uid = uuid.uuid4()
                annotation_submit(item=items[0], annotator=user, labels=["b"], client_uuid=uid)
                with lock:
                    stored.append(uid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def act() -> None:
        try:
            barrier.wait(timeout=30)
            bulk.item_action_run(
                project=project,
                user=first,
                action=action,
                selection=Selection(
                    ids=tuple(Item.objects.filter(project=project).values_list("pk", flat=True))
                ),
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    original = bulk.CHUNK
    bulk.CHUNK = 50  # many chunks, so submissions interleave with them
    try:
        threads = [threading.Thread(target=annotate, args=(u,)) for u in racers]
        threads.append(threading.Thread(target=act))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        bulk.CHUNK = original
    assert not errors, errors
    # Every acknowledged answer is stored; no item has more answers than it wants.
    assert Annotation.objects.filter(client_uuid__in=stored).count() == len(stored) > 0
    project.refresh_from_db()
    for item in Item.objects.filter(project=project).annotate(n=Count("annotations")):
        assert item.n <= item.answers_wanted(project), item
        assert item.n == item.annotation_count
    counters_agree(project)
    action_row = ItemAction.objects.get(project=project)
    assert action_row.finished_at is not None and action_row.item_count == 300
