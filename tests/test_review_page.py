"""The reviewer page and its actions, through the test client."""

from __future__ import annotations

import json
import uuid

import pytest
from django.urls import reverse

from annotations import exports
from annotations.models import Membership, Review, ReviewEvent
from annotations.services import project_set_overlap
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.django_db


def answer(item, user, labels):
    item.refresh_from_db()
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


@pytest.fixture
def disputed(project, annotator, reviewer):
    """Item 0 answered three different ways by three annotators: a tie, so it goes to review."""
    project = project_set_overlap(project, 3)
    others = [make_user("bo"), make_user("cy")]
    for user in others:
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    item = project.items.order_by("id").first()
    for user, label in zip([annotator, *others], ["positive", "negative", "neutral"], strict=True):
        answer(item, user, [label])
    return item


def test_a_disputed_item_is_shown_to_a_reviewer_with_every_answer(client, disputed, reviewer):
    client.force_login(reviewer)
    page = client.get(reverse("review", args=[disputed.project_id])).content.decode()
    assert disputed.text in page
    assert "annotators disagree" in page
    for who in ("annie", "bo", "cy"):
        assert who in page
    review = Review.objects.get(item=disputed)
    assert review.claimed_by == reviewer


def test_deciding_records_the_decision_and_the_export_holds_the_gold_label(
    client, disputed, reviewer
):
    client.force_login(reviewer)
    review = Review.objects.get(item=disputed)
    client.get(reverse("review", args=[disputed.project_id]))
    response = client.post(
        reverse("review_decide", args=[disputed.project_id, review.pk]),
        {"labels": ["negative"], "comment": "sarcasm", "client_uuid": str(uuid.uuid4())},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "Decided: t0 → negative" in response.content.decode()
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED
    assert review.labels == ["negative"]
    event = ReviewEvent.objects.get(review=review, action=ReviewEvent.Action.DECIDE)
    assert event.actor == reviewer and event.comment == "sarcasm"
    assert event.chosen == "annotator:bo"
    assert [c["who"] for c in event.candidates] == ["annie", "bo", "cy"]
    record = json.loads(next(exports.jsonl_chunks(disputed.project)).splitlines()[0])
    assert record["gold"]["labels"] == ["negative"]
    assert record["gold"]["source"] == "adjudicated"


def test_a_second_decision_is_refused_with_who_decided(client, disputed, reviewer, project_admin):
    review = Review.objects.get(item=disputed)
    client.force_login(reviewer)
    client.get(reverse("review", args=[disputed.project_id]))
    url = reverse("review_decide", args=[disputed.project_id, review.pk])
    client.post(url, {"labels": ["negative"], "client_uuid": str(uuid.uuid4())})
    client.force_login(project_admin)
    response = client.post(
        url,
        {"labels": ["positive"], "client_uuid": str(uuid.uuid4())},
        headers={"HX-Request": "true"},
    )
    text = response.content.decode()
    assert "Already decided by rev" in text
    review.refresh_from_db()
    assert review.labels == ["negative"]
    assert ReviewEvent.objects.filter(review=review, action="decide").count() == 1


def test_reopening_puts_the_item_back_and_is_logged(client, disputed, reviewer):
    review = Review.objects.get(item=disputed)
    client.force_login(reviewer)
    client.get(reverse("review", args=[disputed.project_id]))
    client.post(
        reverse("review_decide", args=[disputed.project_id, review.pk]),
        {"labels": ["negative"], "client_uuid": str(uuid.uuid4())},
    )
    response = client.post(
        reverse("review_reopen", args=[disputed.project_id, review.pk]), {"comment": "typo"}
    )
    assert response.status_code == 302
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN and review.labels is None
    assert ReviewEvent.objects.filter(review=review, action="reopen", comment="typo").exists()
    detail = client.get(reverse("review_detail", args=[disputed.project_id, review.pk]))
    assert "reopened" in detail.content.decode()


def test_a_reviewer_can_flag_an_item_for_review(client, project, reviewer):
    item = project.items.order_by("id").first()
    client.force_login(reviewer)
    response = client.post(
        reverse("item_flag", args=[project.pk, item.pk]), {"note": "<b>odd</b> wording"}
    )
    assert response.status_code == 302
    review = Review.objects.get(item=item)
    assert review.reasons == ["flag"]
    page = client.get(reverse("review", args=[project.pk])).content.decode()
    assert "&lt;b&gt;odd&lt;/b&gt; wording" in page


def test_annotators_cannot_review_or_flag(client, disputed, annotator):
    client.force_login(annotator)
    review = Review.objects.get(item=disputed)
    pk = disputed.project_id
    assert client.get(reverse("review", args=[pk])).status_code == 403
    assert client.get(reverse("review_detail", args=[pk, review.pk])).status_code == 403
    decide = reverse("review_decide", args=[pk, review.pk])
    assert client.post(decide, {"labels": ["negative"]}).status_code == 403
    assert client.post(reverse("item_flag", args=[pk, disputed.pk])).status_code == 403
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN


def test_outsiders_get_404_on_review_pages(client, disputed, outsider):
    client.force_login(outsider)
    review = Review.objects.get(item=disputed)
    pk = disputed.project_id
    assert client.get(reverse("review", args=[pk])).status_code == 404
    assert client.get(reverse("review_detail", args=[pk, review.pk])).status_code == 404
    assert client.post(reverse("review_reopen", args=[pk, review.pk])).status_code == 404
