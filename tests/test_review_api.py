"""The review API: queue, claims, decisions (idempotent, 409 on a conflict), reopen, flag."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from annotations.models import Membership, Review, ReviewEvent
from annotations.services import project_set_overlap
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def tie(project, annotator, reviewer):
    """Item 0 with two different answers at overlap 2: a tie, in review."""
    project = project_set_overlap(project, 2)
    bo = make_user("bo")
    Membership.objects.create(project=project, user=bo, role=Membership.Role.ANNOTATOR)
    item = project.items.order_by("id").first()
    for user, label in ((annotator, "positive"), (bo, "negative")):
        item.refresh_from_db()
        submit_handed_out(item=item, annotator=user, labels=[label], client_uuid=uuid.uuid4())
    return Review.objects.get(item=item)


def test_reviewers_list_open_reviews_with_every_answer(api, tie, reviewer):
    api.force_authenticate(reviewer)
    body = api.get(f"/api/projects/{tie.project_id}/reviews/?status=open").json()
    [row] = body["results"]
    assert row["reasons"] == ["disagreement"]
    assert [(a["annotator"], a["labels"]) for a in row["answers"]] == [
        ("annie", ["positive"]),
        ("bo", ["negative"]),
    ]
    assert api.get(f"/api/projects/{tie.project_id}/reviews/?status=nope").status_code == 400


def test_claiming_gives_each_reviewer_a_different_item_and_204_when_none_is_left(
    api, tie, reviewer, project_admin
):
    url = f"/api/projects/{tie.project_id}/reviews/next/"
    api.force_authenticate(reviewer)
    first = api.post(url)
    assert first.status_code == 200 and first.json()["claimed_by"] == "rev"
    assert api.post(url).json()["id"] == tie.pk  # their own claim comes back
    api.force_authenticate(project_admin)
    assert api.post(url).status_code == 204


def test_a_decision_is_idempotent_and_a_second_one_is_a_409(api, tie, reviewer, project_admin):
    url = f"/api/projects/{tie.project_id}/reviews/{tie.pk}/decision/"
    body = {"labels": ["negative"], "comment": "clear", "client_uuid": str(uuid.uuid4())}
    api.force_authenticate(reviewer)
    first = api.post(url, body, format="json")
    assert first.status_code == 200
    assert first.json()["labels"] == ["negative"] and first.json()["decided_by"] == "rev"
    assert api.post(url, body, format="json").status_code == 200  # the same decision resent
    assert ReviewEvent.objects.filter(review=tie, action="decide").count() == 1

    api.force_authenticate(project_admin)
    other = {"labels": ["positive"], "client_uuid": str(uuid.uuid4())}
    conflict = api.post(url, other, format="json")
    assert conflict.status_code == 409
    assert "Already decided by rev" in conflict.json()["detail"]
    tie.refresh_from_db()
    assert tie.labels == ["negative"]


def test_a_decision_with_an_unknown_label_is_a_400_that_names_the_classes(api, tie, reviewer):
    api.force_authenticate(reviewer)
    response = api.post(
        f"/api/projects/{tie.project_id}/reviews/{tie.pk}/decision/",
        {"labels": ["meh"], "client_uuid": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 400
    assert "'meh'" in response.json()["labels"][0]
    tie.refresh_from_db()
    assert tie.status == Review.Status.OPEN


def test_reopen_and_flag_through_the_api(api, tie, reviewer, project):
    api.force_authenticate(reviewer)
    base = f"/api/projects/{tie.project_id}/reviews/{tie.pk}"
    assert api.post(f"{base}/reopen/", {}, format="json").status_code == 409  # not decided
    api.post(
        f"{base}/decision/",
        {"labels": ["positive"], "client_uuid": str(uuid.uuid4())},
        format="json",
    )
    reopened = api.post(f"{base}/reopen/", {"comment": "second look"}, format="json")
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    detail = api.get(f"{base}/").json()
    assert [e["action"] for e in detail["events"]] == ["reopen", "decide"]

    other = project.items.order_by("id")[3]
    flagged = api.post(
        f"/api/projects/{project.pk}/items/{other.pk}/flag/", {"note": "typo"}, format="json"
    )
    assert flagged.status_code == 201
    assert flagged.json()["reasons"] == ["flag"] and flagged.json()["flag_note"] == "typo"


def test_annotators_cannot_see_or_decide_reviews(api, tie, annotator):
    api.force_authenticate(annotator)
    assert api.get(f"/api/projects/{tie.project_id}/reviews/").status_code == 403
    response = api.post(
        f"/api/projects/{tie.project_id}/reviews/{tie.pk}/decision/",
        {"labels": ["positive"], "client_uuid": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 403
    tie.refresh_from_db()
    assert tie.status == Review.Status.OPEN


def test_a_review_of_another_project_is_not_found(api, tie, outsider, other_project):
    api.force_authenticate(outsider)
    response = api.get(f"/api/projects/{other_project.pk}/reviews/{tie.pk}/")
    assert response.status_code == 404
