"""A request to relabel an item (`bulk.items_relabel`) always ends: when its new answers are in
(by a submission, or by a recount that finds the item complete), or when a reviewer decides the
item first; a skip is not an answer; deleting the item takes the request with it. The item page
shows where it stands."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import bulk, queue
from annotations.bulk import Selection
from annotations.models import Item, ItemAction, ItemRelabel, Membership, Project, Review
from annotations.review import review_decide, review_flag
from annotations.services import project_recount, project_set_overlap
from curation.dataset_models import LabelIssue
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

Outcome = ItemRelabel.Outcome


def newcomer(project: Project, name: str):
    user = make_user(name)
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


def answer(item: Item, user, label: str | None = "positive") -> None:
    item.refresh_from_db()
    submit_handed_out(
        item=item,
        annotator=user,
        labels=[label] if label else [],
        skipped=label is None,
        client_uuid=uuid.uuid4(),
    )


def sent_back(project: Project, annotator, admin) -> Item:
    """An item answered once (overlap 1), then sent back for one new answer."""
    Project.objects.filter(pk=project.pk).update(overlap=1)
    project.refresh_from_db()
    item = Item.objects.filter(project=project).first()
    answer(item, annotator)
    bulk.items_relabel(project=project, user=admin, selection=Selection.of_ids([item.pk]))
    return item


def relabel_of(item: Item) -> ItemRelabel:
    return ItemRelabel.objects.get(item=item)


def counters_exact(project: Project) -> None:
    project.refresh_from_db()
    before = (project.item_count, project.complete_count)
    recounted = project_recount(project)
    assert (recounted.item_count, recounted.complete_count) == before


def test_a_skip_is_not_an_answer_and_the_next_answer_ends_the_request(
    project, annotator, project_admin
):
    item = sent_back(project, annotator, project_admin)
    answer(item, newcomer(project, "skipper"), None)
    assert relabel_of(item).outcome == Outcome.PENDING
    assert relabel_of(item).completed_at is None

    answer(item, newcomer(project, "fresh"), "negative")
    relabel = relabel_of(item)
    assert (relabel.outcome, relabel.completed_at is not None) == (Outcome.ANSWERED, True)
    assert Review.Reason.RELABEL in Review.objects.get(item=item).reasons


def test_a_decision_while_the_new_answers_are_pending_ends_the_request_and_keeps_the_decision(
    project, annotator, reviewer, project_admin
):
    item = sent_back(project, annotator, project_admin)
    review = review_flag(item=item, user=reviewer)
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["neutral"])

    relabel = relabel_of(item)
    assert (relabel.outcome, relabel.completed_at is not None) == (Outcome.DECIDED, True)
    item.refresh_from_db()
    assert (item.needs_annotation, item.answers_wanted(project)) == (False, 1)
    counters_exact(project)
    # Nobody is asked for the answers any more, so nothing can reopen the decision later.
    late = newcomer(project, "late")
    assert item.pk not in {i.pk for i in queue.next_items(project=project, user=late, count=50)}
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED and review.labels == ["neutral"]


def test_a_recount_that_finds_the_item_complete_ends_the_request_as_answered(
    project, annotator, reviewer, project_admin
):
    Project.objects.filter(pk=project.pk).update(overlap=2)
    project.refresh_from_db()
    item = Item.objects.filter(project=project).first()
    answer(item, annotator)
    answer(item, reviewer)
    bulk.items_relabel(project=project, user=project_admin, selection=Selection.of_ids([item.pk]))
    answer(item, newcomer(project, "first"), "negative")  # 3 of the 4 wanted
    assert relabel_of(item).completed_at is None

    project_set_overlap(project, 1)  # now 3 are wanted: the item is complete without a submission
    relabel = relabel_of(item)
    assert (relabel.outcome, relabel.completed_at is not None) == (Outcome.ANSWERED, True)
    review = Review.objects.get(item=item)
    assert review.status == Review.Status.OPEN and Review.Reason.RELABEL in review.reasons
    assert review.flagged_by == project_admin


def test_deleting_the_item_takes_its_pending_request_with_it(project, annotator, project_admin):
    item = sent_back(project, annotator, project_admin)
    # The analyses' rows about the item go too (before, the deletion failed at commit on them).
    LabelIssue.objects.create(
        item=item, project=project, gold=["positive"], score=0.5, updated_at=timezone.now()
    )
    bulk.items_delete_recorded(
        project=project, user=project_admin, selection=Selection.of_ids([item.pk])
    )
    assert not ItemRelabel.objects.exists() and not LabelIssue.objects.exists()
    assert ItemAction.objects.filter(action="relabel", item_count=1).exists()


def test_the_item_page_and_its_api_twin_show_where_the_request_stands(
    project, annotator, reviewer, project_admin
):
    item = sent_back(project, annotator, project_admin)
    client = Client()
    client.force_login(reviewer)
    url = reverse("project_data_item", args=[project.pk, item.pk])
    page = client.get(url).content.decode()
    assert 'data-relabel="pending"' in page and "waiting, 0 of 1 in" in page

    answer(item, newcomer(project, "fresh"), "negative")
    page = client.get(url).content.decode()
    assert 'data-relabel="answered"' in page and "New answers in, sent to review" in page
    api = client.get(reverse("api-data-item", args=[project.pk, item.pk])).json()
    assert [(r["outcome"], r["new_answers"], r["kept_answers"]) for r in api["relabels"]] == [
        ("answered", 1, 1)
    ]
