"""Several annotators per item: each item goes to as many distinct annotators as the overlap
asks and no more, nobody sees the others' answers, partly answered items can go first, and
assigned items go only to their assignees."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotations import queue
from annotations.models import (
    Annotation,
    Item,
    ItemAssignment,
    ItemLease,
    Membership,
    Project,
)
from annotations.services import project_recount, project_set_overlap
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def member(project: Project, username: str, role: str = Membership.Role.ANNOTATOR):
    user = make_user(username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def label(item: Item, user, labels: list[str]) -> None:
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


def item_named(project: Project, external_id: str) -> Item:
    item = Item.objects.get(project=project, external_id=external_id)
    item.project = project
    return item


def external_ids(items: list[Item]) -> list[str]:
    return [i.external_id for i in items]


def next_one(project: Project, user) -> str | None:
    items = queue.next_items(project=project, user=user, count=1)
    return items[0].external_id if items else None


@pytest.fixture
def three(project) -> Project:
    """The project with three answers wanted per item."""
    return project_set_overlap(project, 3)


@pytest.fixture
def crowd(project) -> list:
    return [member(project, name) for name in ("ann", "bob", "cy", "dan")]


# --- overlap -------------------------------------------------------------------------------------


def test_with_overlap_three_an_item_goes_to_three_annotators_and_is_complete_at_three_answers(
    three, crowd
):
    ann, bob, cy, dan = crowd
    assert [next_one(three, u) for u in (ann, bob, cy)] == ["t0", "t0", "t0"]
    assert next_one(three, dan) == "t1"  # three live leases fill t0's three slots

    t0 = item_named(three, "t0")
    for who, name in zip((ann, bob), ["positive", "negative"], strict=True):
        label(t0, who, [name])
        t0.refresh_from_db()
        assert t0.needs_annotation
    label(t0, cy, ["positive"])

    t0.refresh_from_db()
    three.refresh_from_db()
    assert (t0.annotation_count, t0.needs_annotation, three.complete_count) == (3, False, 1)
    assert set(Annotation.objects.filter(item=t0).values_list("annotator", flat=True)) == {
        ann.pk,
        bob.pk,
        cy.pk,
    }


def test_a_fourth_annotator_never_gets_an_item_three_others_answered(three, crowd):
    ann, bob, cy, dan = crowd
    t0 = item_named(three, "t0")
    for who in (ann, bob, cy):
        label(t0, who, ["neutral"])

    served = []
    while items := queue.next_items(project=three, user=dan, count=1):
        served.append(items[0].external_id)
        label(items[0], dan, ["neutral"])

    assert len(served) == 19 and "t0" not in served


def test_an_annotator_who_answered_an_item_is_not_given_it_again(three, crowd):
    ann = crowd[0]
    t0 = item_named(three, "t0")
    label(t0, ann, ["positive"])
    ItemLease.objects.all().delete()

    served = external_ids(queue.next_items(project=three, user=ann, count=20))

    assert len(served) == 19 and "t0" not in served


def test_an_expired_lease_gives_its_slot_to_another_annotator(three, crowd):
    ann, bob, cy, dan = crowd
    for who in (ann, bob, cy):
        assert next_one(three, who) == "t0"
    ItemLease.objects.filter(user=cy).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert next_one(three, dan) == "t0"


# --- nobody sees the others' answers -------------------------------------------------------------


def card(html: str, item: Item) -> str:
    match = re.search(rf'<article class="card" data-item-id="{item.pk}".*?</article>', html, re.S)
    assert match, f"no card for {item.external_id}"
    return match.group(0)


def test_the_annotate_page_shows_none_of_another_annotators_answer(client, three, crowd):
    ann, bob = crowd[:2]
    t0 = item_named(three, "t0")
    client.force_login(bob)
    url = reverse("annotate", args=[three.pk])
    before = client.get(url).content.decode()
    assert f'data-item-id="{t0.pk}"' in before

    label(t0, ann, ["negative"])
    after = client.get(url).content.decode()

    assert "negative" not in card(after, t0)
    assert "data-reopened" not in after and "editing your answer" not in after
    # Every "negative" on the page is one that was there before ann answered (the label bar).
    assert after.count("negative") == before.count("negative")
    # Opening the item (bob holds it) shows his own, empty, answer.
    opened = client.get(reverse("annotate_item", args=[three.pk, t0.pk])).content.decode()
    assert "negative" not in card(opened, t0)


def test_the_api_lists_an_annotators_own_answers_only_and_reviewers_see_all(three, crowd, reviewer):
    ann, bob = crowd[:2]
    t0, t1 = item_named(three, "t0"), item_named(three, "t1")
    label(t0, ann, ["negative"])
    label(t1, ann, ["neutral"])
    label(t0, bob, ["positive"])
    url = reverse("api-annotation-list", args=[three.pk])

    def listing(user) -> list[tuple[str, str, list[str]]]:
        client = APIClient()
        client.force_authenticate(user)
        response = client.get(url)
        assert response.status_code == 200
        return sorted(
            (a["annotator"], a["external_id"], a["labels"]) for a in response.json()["results"]
        )

    assert listing(bob) == [("bob", "t0", ["positive"])]
    assert listing(ann) == [("ann", "t0", ["negative"]), ("ann", "t1", ["neutral"])]
    assert len(listing(reviewer)) == 3
    client = APIClient()
    client.force_authenticate(bob)
    served = client.get(reverse("api-next-items", args=[three.pk]), {"count": 3}).content.decode()
    assert '"t0"' not in served  # bob answered it
    assert "negative" not in served and "neutral" not in served


# --- partly answered items first -----------------------------------------------------------------


def test_an_item_with_some_answers_is_served_before_fresh_items_of_higher_priority(three, crowd):
    ann, bob = crowd[:2]
    Item.objects.filter(project=three, external_id="t3").update(priority=5.0)
    label(item_named(three, "t10"), ann, ["positive"])  # 1 of 3 answers

    served = external_ids(queue.next_items(project=three, user=bob, count=2))

    assert served == ["t10", "t3"]


def test_without_serve_partial_first_the_queue_keeps_plain_priority_order(three, crowd):
    ann, bob = crowd[:2]
    Project.objects.filter(pk=three.pk).update(serve_partial_first=False)
    three.refresh_from_db()
    Item.objects.filter(project=three, external_id="t3").update(priority=5.0)
    label(item_named(three, "t10"), ann, ["positive"])

    served = external_ids(queue.next_items(project=three, user=bob, count=3))

    assert served == ["t3", "t0", "t1"]


def test_a_partly_answered_item_is_not_served_first_to_the_annotator_who_answered_it(three, crowd):
    ann = crowd[0]
    label(item_named(three, "t10"), ann, ["positive"])

    assert next_one(three, ann) == "t0"


# --- assigned items ------------------------------------------------------------------------------


def assign(project: Project, item: Item, users: list, by) -> None:
    ItemAssignment.objects.bulk_create(
        [ItemAssignment(project=project, item=item, user=u, assigned_by=by) for u in users]
    )
    Item.objects.filter(pk=item.pk).update(required_answers=len(users))
    item.refresh_from_db()


def test_an_assigned_item_goes_to_its_assignees_first_and_to_nobody_else(
    project, crowd, project_admin
):
    ann, bob, cy, _ = crowd
    t5 = item_named(project, "t5")
    assign(project, t5, [ann, bob], project_admin)

    assert next_one(project, ann) == "t5"  # ahead of t0, the top of the queue
    assert next_one(project, bob) == "t5"  # assignees do not exclude each other
    served = []
    while items := queue.next_items(project=project, user=cy, count=1):
        served.append(items[0].external_id)
        label(items[0], cy, ["neutral"])
    assert len(served) == 19 and "t5" not in served


def test_an_assigned_item_is_complete_when_every_assignee_answered(project, crowd, project_admin):
    ann, bob, cy, _ = crowd
    three = project_set_overlap(project, 3)
    t5 = item_named(three, "t5")
    assign(three, t5, [ann, bob], project_admin)

    label(t5, ann, ["positive"])
    t5.refresh_from_db()
    assert t5.needs_annotation and next_one(three, ann) != "t5"
    label(t5, bob, ["positive"])

    t5.refresh_from_db()
    three.refresh_from_db()
    assert (t5.annotation_count, t5.needs_annotation, three.complete_count) == (2, False, 1)
    # A recount agrees: two answers complete it although the project asks three of others.
    three = project_recount(three)
    t5.refresh_from_db()
    assert not t5.needs_annotation and three.complete_count == 1


def test_an_annotator_not_assigned_an_item_cannot_answer_it_even_through_the_api(
    project, crowd, project_admin
):
    ann, bob, cy, _ = crowd
    t5 = item_named(project, "t5")
    assign(project, t5, [ann, bob], project_admin)
    api = APIClient()
    api.force_authenticate(cy)
    response = api.post(
        f"/api/projects/{project.pk}/annotations/",
        {"item": t5.pk, "labels": ["positive"], "client_uuid": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 409
    assert "assigned to named annotators" in response.json()["item"][0]
    t5.refresh_from_db()
    assert t5.annotation_count == 0
