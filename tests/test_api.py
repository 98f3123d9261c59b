"""The REST API: each endpoint's answer for members, and its refusals for everyone else."""

from __future__ import annotations

import io
import uuid

import pytest
from django.urls import reverse
from knox.models import AuthToken
from PIL import Image
from rest_framework.test import APIClient

from annotations.models import Annotation, AnnotationRevision, Item, ItemLease, Membership
from annotations.services import add_items_counted
from tests.conftest import PASSWORD, hand_out, make_user

NOT_LOGGED_IN = "Authentication credentials were not provided."


def api_as(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def submit(client: APIClient, project, **body):
    body.setdefault("client_uuid", str(uuid.uuid4()))
    return client.post(reverse("api-annotation-list", args=[project.pk]), body, format="json")


@pytest.fixture
def png_item(project, settings, tmp_path) -> Item:
    settings.MEDIA_ROOT = tmp_path
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="PNG")
    item = Item(project=project, external_id="blue.png", image_format="PNG")
    item.image.save("blue.png", io.BytesIO(buffer.getvalue()), save=False)
    item.save()
    add_items_counted(project, 1)
    return item


# --- Authentication ---------------------------------------------------------------------------


def test_a_user_obtains_a_token_with_their_password_and_uses_it(annotator, project):
    client = APIClient()
    response = client.post(
        reverse("api-token"), {"username": "annie", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    stored = AuthToken.objects.get(user=annotator)
    assert token.startswith(stored.token_key) and stored.digest != token  # stored hashed

    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = client.get(reverse("api-project-list"))
    assert listed.status_code == 200
    assert [p["name"] for p in listed.json()["results"]] == ["Sentiment"]


def test_a_wrong_password_gets_no_token(annotator):
    response = APIClient().post(
        reverse("api-token"), {"username": "annie", "password": "wrong"}, format="json"
    )
    assert response.status_code == 400
    assert not AuthToken.objects.exists()


def test_an_invalid_token_is_refused(project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get(reverse("api-project-list"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["detail"] == "Invalid token."


@pytest.mark.parametrize(
    "name,args",
    [
        ("api-project-list", []),
        ("api-project-detail", ["P"]),
        ("api-item-list", ["P"]),
        ("api-next-items", ["P"]),
        ("api-annotation-list", ["P"]),
        ("api-item-image", ["P", "I"]),
    ],
)
def test_anonymous_requests_are_refused_everywhere(project, name, args):
    item = project.items.first()
    url = reverse(name, args=[{"P": project.pk, "I": item.pk}[a] for a in args])
    response = api_as(None).get(url)
    assert response.status_code == 403
    assert response.json()["detail"] == NOT_LOGGED_IN
    assert api_as(None).post(url, {}, format="json").status_code == 403


def test_a_session_post_without_the_csrf_token_is_refused(annotator, project):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="annie", password=PASSWORD)
    response = submit(client, project, item=project.items.first().pk, labels=["positive"])
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Annotation.objects.exists()


# --- Projects ---------------------------------------------------------------------------------


def test_the_project_list_shows_only_the_users_projects_with_role_counts_and_classes(
    annotator, project, other_project
):
    response = api_as(annotator).get(reverse("api-project-list"))
    assert response.status_code == 200
    (entry,) = response.json()["results"]
    assert entry["id"] == project.pk
    assert entry["role"] == "annotator"
    assert (entry["item_count"], entry["complete_count"], entry["remaining_count"]) == (20, 0, 20)
    assert [c["name"] for c in entry["label_classes"]] == ["positive", "negative", "neutral"]
    assert set(entry["label_classes"][0]) == {"name", "color", "key", "order", "retired"}


def test_each_member_sees_their_own_role_in_the_project_list(reviewer, project_admin, project):
    for user, role in [(reviewer, "reviewer"), (project_admin, "admin")]:
        (entry,) = api_as(user).get(reverse("api-project-list")).json()["results"]
        assert entry["role"] == role


def test_a_project_is_shown_to_members_and_hidden_from_outsiders(annotator, outsider, project):
    url = reverse("api-project-detail", args=[project.pk])
    response = api_as(annotator).get(url)
    assert response.status_code == 200
    assert response.json()["name"] == "Sentiment"
    assert response.json()["role"] == "annotator"
    assert response.json()["instructions"] == "Label the sentiment of each review."
    assert api_as(outsider).get(url).status_code == 404
    assert api_as(annotator).get(reverse("api-project-detail", args=[10**9])).status_code == 404


def test_the_project_detail_is_neither_replaced_nor_deleted(project_admin, project):
    """Settings change by PATCH (tests/test_project_setup_api.py); a project is deleted in
    Django admin only."""
    url = reverse("api-project-detail", args=[project.pk])
    client = api_as(project_admin)
    assert client.put(url, {"name": "renamed"}, format="json").status_code == 405
    assert client.delete(url).status_code == 405
    project.refresh_from_db()
    assert project.name == "Sentiment"


# --- Items ------------------------------------------------------------------------------------


def test_members_page_through_every_item_with_a_cursor(annotator, project):
    client = api_as(annotator)
    url = reverse("api-item-list", args=[project.pk]) + "?page_size=7"
    seen, pages = [], 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        body = response.json()
        seen += [item["external_id"] for item in body["results"]]
        url, pages = body["next"], pages + 1
    assert pages == 3
    assert seen == [f"t{i}" for i in range(20)]


def test_items_carry_their_text_metadata_count_and_no_image_url(annotator, project):
    Item.objects.filter(project=project, external_id="t0").update(metadata={"source": "imdb"})
    response = api_as(annotator).get(reverse("api-item-list", args=[project.pk]))
    first = response.json()["results"][0]
    assert set(first) == {"id", "external_id", "text", "image_url", "metadata", "annotation_count"}
    assert first["text"] == "review number 0"
    assert first["metadata"] == {"source": "imdb"}
    assert first["image_url"] is None
    assert first["annotation_count"] == 0


def test_outsiders_cannot_list_a_projects_items(outsider, project):
    response = api_as(outsider).get(reverse("api-item-list", args=[project.pk]))
    assert response.status_code == 404
    assert "review number" not in response.content.decode()


def test_image_items_link_to_an_image_a_token_client_can_fetch(annotator, project, png_item):
    _, token = AuthToken.objects.create(user=annotator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    items = client.get(reverse("api-item-list", args=[project.pk])).json()["results"]
    (image_url,) = [i["image_url"] for i in items if i["image_url"]]
    response = client.get(image_url, HTTP_ACCEPT="image/avif,image/webp,*/*")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_images_are_hidden_from_outsiders_and_text_items_have_none(
    annotator, outsider, project, png_item
):
    url = reverse("api-item-image", args=[project.pk, png_item.pk])
    assert api_as(outsider).get(url).status_code == 404
    text_item = project.items.exclude(pk=png_item.pk).first()
    url = reverse("api-item-image", args=[project.pk, text_item.pk])
    assert api_as(annotator).get(url).status_code == 404


# --- The queue --------------------------------------------------------------------------------


def test_next_leases_items_to_the_annotator_and_repeats_them_until_answered(
    annotator, reviewer, project
):
    url = reverse("api-next-items", args=[project.pk])
    first = api_as(annotator).get(url, {"count": 3})
    assert first.status_code == 200
    ids = [i["id"] for i in first.json()["results"]]
    assert len(ids) == 3
    assert first.json()["lease_seconds"] > 0
    assert set(ItemLease.objects.filter(user=annotator).values_list("item_id", flat=True)) == set(
        ids
    )

    again = api_as(annotator).get(url, {"count": 3})
    assert [i["id"] for i in again.json()["results"]] == ids

    others = api_as(reviewer).get(url, {"count": 3}).json()["results"]
    assert not {i["id"] for i in others} & set(ids)


def test_next_skips_items_the_annotator_already_answered(annotator, project):
    url = reverse("api-next-items", args=[project.pk])
    client = api_as(annotator)
    (item,) = client.get(url).json()["results"]
    assert submit(client, project, item=item["id"], labels=["positive"]).status_code == 201
    (following,) = client.get(url).json()["results"]
    assert following["id"] != item["id"]


@pytest.mark.parametrize("count", ["0", "-1", "abc", "101"])
def test_next_with_a_bad_count_is_a_400_naming_the_parameter(annotator, project, count):
    response = api_as(annotator).get(reverse("api-next-items", args=[project.pk]), {"count": count})
    assert response.status_code == 400
    assert "count" in response.json()
    assert not ItemLease.objects.exists()


def test_outsiders_get_no_items_from_the_queue(outsider, project):
    response = api_as(outsider).get(reverse("api-next-items", args=[project.pk]))
    assert response.status_code == 404
    assert not ItemLease.objects.exists()


# --- Submitting annotations -------------------------------------------------------------------


def test_a_submission_is_created_once_and_a_resend_answers_200(annotator, project):
    client = api_as(annotator)
    item = project.items.first()
    hand_out(item, annotator)
    body = {"item": item.pk, "labels": ["negative"], "time_spent_ms": 900}
    body["client_uuid"] = str(uuid.uuid4())
    created = submit(client, project, **body)
    assert created.status_code == 201
    assert created.json()["labels"] == ["negative"]
    assert created.json()["annotator"] == "annie"
    resent = submit(client, project, **body)
    assert resent.status_code == 200
    assert resent.json()["id"] == created.json()["id"]
    assert Annotation.objects.count() == 1
    project.refresh_from_db()
    assert project.complete_count == 1


def test_a_new_answer_for_the_same_item_edits_it_and_keeps_a_revision(annotator, project):
    client = api_as(annotator)
    item = project.items.first()
    hand_out(item, annotator)
    assert submit(client, project, item=item.pk, labels=["negative"]).status_code == 201
    edited = submit(client, project, item=item.pk, labels=["positive"])
    assert edited.status_code == 200
    assert Annotation.objects.get().labels == ["positive"]
    assert AnnotationRevision.objects.get().previous_labels == ["negative"]


def test_a_skip_is_stored_without_labels(annotator, project):
    item = project.items.first()
    hand_out(item, annotator)
    response = submit(api_as(annotator), project, item=item.pk, skipped=True)
    assert response.status_code == 201
    assert (response.json()["skipped"], response.json()["labels"]) == (True, [])


@pytest.mark.parametrize(
    "body,field,message",
    [
        ({"labels": ["happy"]}, "labels", "Unknown label(s) 'happy'"),
        ({"labels": ["positive", "negative"]}, "labels", "Choose exactly one label"),
        ({"labels": []}, "labels", "Choose exactly one label"),
        ({"labels": ["positive"], "skipped": True}, "labels", "A skipped item carries no labels"),
        ({"labels": "positive"}, "labels", "Expected a list"),
        ({"labels": ["positive"], "client_uuid": "nope"}, "client_uuid", "valid UUID"),
        ({"labels": ["positive"], "time_spent_ms": -5}, "time_spent_ms", "greater than or equal"),
        ({"labels": ["positive"], "item": "x"}, "item", "valid integer"),
    ],
)
def test_a_bad_submission_is_a_400_naming_the_field_and_stores_nothing(
    annotator, project, body, field, message
):
    body = {"item": project.items.first().pk, **body}
    response = submit(api_as(annotator), project, **body)
    assert response.status_code == 400
    errors = response.json()
    assert field in errors
    assert message in " ".join(errors[field])
    assert not Annotation.objects.exists()


def test_a_submission_without_client_uuid_is_refused(annotator, project):
    response = api_as(annotator).post(
        reverse("api-annotation-list", args=[project.pk]),
        {"item": project.items.first().pk, "labels": ["positive"]},
        format="json",
    )
    assert response.status_code == 400
    assert "client_uuid" in response.json()


def test_a_client_uuid_reused_for_another_item_is_refused(annotator, project):
    client = api_as(annotator)
    first, second = project.items.all()[:2]
    hand_out(first, annotator)
    hand_out(second, annotator)
    key = str(uuid.uuid4())
    created = submit(client, project, item=first.pk, labels=["positive"], client_uuid=key)
    assert created.status_code == 201
    response = submit(client, project, item=second.pk, labels=["positive"], client_uuid=key)
    assert response.status_code == 400
    assert "client_uuid" in response.json()
    assert Annotation.objects.count() == 1


def test_an_item_the_queue_gave_someone_else_is_a_409_and_stores_nothing(
    annotator, reviewer, project
):
    taken = api_as(reviewer).get(reverse("api-next-items", args=[project.pk])).json()
    item_id = taken["results"][0]["id"]
    response = submit(api_as(annotator), project, item=item_id, labels=["positive"])
    assert response.status_code == 409
    assert "not handed to you" in response.json()["item"][0]
    assert not Annotation.objects.exists()
    mine = api_as(annotator).get(reverse("api-next-items", args=[project.pk])).json()
    assert item_id not in {r["id"] for r in mine["results"]}
    first = mine["results"][0]["id"]
    assert submit(api_as(annotator), project, item=first, labels=["positive"]).status_code == 201


def test_an_item_of_another_project_is_not_found(annotator, project, other_project):
    foreign = other_project.items.first()
    response = submit(api_as(annotator), project, item=foreign.pk, labels=["positive"])
    assert response.status_code == 404
    assert not Annotation.objects.exists()


def test_outsiders_cannot_submit_to_a_project(outsider, project):
    response = submit(api_as(outsider), project, item=project.items.first().pk, labels=["a"])
    assert response.status_code == 404
    assert not Annotation.objects.exists()


# --- Listing annotations ----------------------------------------------------------------------


@pytest.fixture
def answered(project, annotator, reviewer):
    """Two answers by the annotator and one by the reviewer."""
    items = list(project.items.order_by("id")[:3])
    for item, user in zip(items, [annotator, annotator, reviewer], strict=True):
        hand_out(item, user)
        assert submit(api_as(user), project, item=item.pk, labels=["neutral"]).status_code == 201
    return items


def test_reviewers_and_project_admins_list_every_annotation(
    reviewer, project_admin, project, answered
):
    url = reverse("api-annotation-list", args=[project.pk])
    for user in (reviewer, project_admin):
        response = api_as(user).get(url)
        assert response.status_code == 200
        rows = response.json()["results"]
        assert sorted(r["annotator"] for r in rows) == ["annie", "annie", "rev"]
        assert {r["external_id"] for r in rows} == {i.external_id for i in answered}


def test_annotators_list_only_their_own_annotations(annotator, project, answered):
    response = api_as(annotator).get(reverse("api-annotation-list", args=[project.pk]))
    assert response.status_code == 200
    assert [r["annotator"] for r in response.json()["results"]] == ["annie", "annie"]


def test_annotations_are_paged_with_a_cursor(project_admin, project, answered):
    client = api_as(project_admin)
    first = client.get(reverse("api-annotation-list", args=[project.pk]), {"page_size": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    ids = [r["id"] for r in first["results"] + second["results"]]
    assert ids == sorted(set(ids))


def test_outsiders_cannot_list_a_projects_annotations(outsider, project, answered):
    response = api_as(outsider).get(reverse("api-annotation-list", args=[project.pk]))
    assert response.status_code == 404


def test_a_member_of_several_projects_sees_each_with_its_own_role(project, other_project):
    user = make_user("multi")
    Membership.objects.create(project=project, user=user, role="reviewer")
    Membership.objects.create(project=other_project, user=user, role="annotator")
    rows = api_as(user).get(reverse("api-project-list")).json()["results"]
    assert {r["name"]: r["role"] for r in rows} == {
        "Sentiment": "reviewer",
        "Other team": "annotator",
    }
