"""Setting projects up through the API: create (site admins and users with "Can add project"),
settings, label classes and members. Project admins write; other members get 403, outsiders
404; a refusal is a 400 naming the field, with nothing changed."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.test import APIClient

from annotations.models import Annotation, GoldLabel, LabelClass, Membership, Project
from curation.models import ProjectTraining
from tests.conftest import make_user, submit_handed_out

Role = Membership.Role


def api_as(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def body(name: str = "Pets", **extra) -> dict:
    return {
        "name": name,
        "item_kind": "text",
        "labeling_mode": "multi",
        "instructions": "Which animals does the text mention?",
        "overlap": 2,
        "classes": [{"name": "cat", "color": "#123456", "key": "c"}, {"name": "dog"}],
        **extra,
    }


@pytest.fixture
def creator(db):
    user = make_user("creator")
    user.user_permissions.add(Permission.objects.get(codename="add_project"))
    return user


def classes_url(project, class_id=None) -> str:
    if class_id is None:
        return reverse("api-class-list", args=[project.pk])
    return reverse("api-class-detail", args=[project.pk, class_id])


def members_url(project, user=None) -> str:
    if user is None:
        return reverse("api-member-list", args=[project.pk])
    return reverse("api-member-detail", args=[project.pk, user.pk])


# --- Create -----------------------------------------------------------------------------------


def test_a_user_with_the_permission_creates_a_project_and_becomes_its_admin(creator):
    response = api_as(creator).post(reverse("api-project-list"), body(), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["name"], data["labeling_mode"], data["overlap"], data["role"]) == (
        "Pets",
        "multi",
        2,
        "admin",
    )
    assert [(c["name"], c["key"]) for c in data["label_classes"]] == [("cat", "c"), ("dog", "")]
    project = Project.objects.get(pk=data["id"])
    assert Membership.objects.get(project=project, user=creator).role == Role.ADMIN
    assert project.label_classes.get(name="cat").color == "#123456"
    listed = api_as(creator).get(reverse("api-project-list")).json()["results"]
    assert [(p["name"], p["role"]) for p in listed] == [("Pets", "admin")]


def test_users_without_the_permission_cannot_create_projects(annotator, db):
    response = api_as(annotator).post(reverse("api-project-list"), body(), format="json")
    assert response.status_code == 403
    assert api_as().post(reverse("api-project-list"), body(), format="json").status_code in (
        401,
        403,
    )
    assert not Project.objects.filter(name="Pets").exists()


def test_repeated_class_names_and_keys_are_refused_per_class_and_nothing_is_created(creator):
    classes = [{"name": "cat", "key": "x"}, {"name": "cat"}, {"name": "dog", "key": "x"}]
    response = api_as(creator).post(
        reverse("api-project-list"), body(classes=classes), format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "classes": [
            {},
            {"name": ["Class 1 is already named 'cat'."]},
            {"key": ["Class 1 already uses the key 'x'."]},
        ]
    }
    assert not Project.objects.exists() and not LabelClass.objects.exists()


def test_a_taken_name_no_classes_or_a_bad_mode_are_refused_naming_the_field(creator, project):
    client = api_as(creator)
    url = reverse("api-project-list")
    taken = client.post(url, body(name="Sentiment"), format="json")
    assert taken.status_code == 400 and "name" in taken.json()
    empty = client.post(url, body(classes=[]), format="json")
    assert empty.status_code == 400 and "classes" in empty.json()
    mode = client.post(url, body(labeling_mode="sometimes"), format="json")
    assert mode.status_code == 400 and "labeling_mode" in mode.json()
    assert list(Project.objects.values_list("name", flat=True)) == ["Sentiment"]


# --- Settings ---------------------------------------------------------------------------------


def test_a_project_admin_edits_settings_through_the_settings_service(project, project_admin):
    url = reverse("api-project-detail", args=[project.pk])
    response = api_as(project_admin).patch(
        url,
        {"name": "Sentiment v2", "overlap": 2, "training": {"strategy": "entropy"}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    data = response.json()
    assert (data["name"], data["overlap"], data["training"]["strategy"]) == (
        "Sentiment v2",
        2,
        "entropy",
    )
    project.refresh_from_db()
    assert (project.name, project.overlap) == ("Sentiment v2", 2)
    assert ProjectTraining.objects.get(project=project).strategy == "entropy"


def test_bad_settings_are_refused_naming_the_field_and_nothing_changes(project, project_admin):
    url = reverse("api-project-detail", args=[project.pk])
    client = api_as(project_admin)
    zero = client.patch(url, {"overlap": 0, "instructions": "new"}, format="json")
    assert zero.status_code == 400 and "overlap" in zero.json()
    frozen = client.patch(url, {"item_kind": "image", "instructions": "new"}, format="json")
    assert frozen.status_code == 400
    assert "can no longer change" in frozen.json()["item_kind"][0]
    project.refresh_from_db()
    assert (project.overlap, project.item_kind) == (1, "text")
    assert project.instructions == "Label the sentiment of each review."


def test_only_project_admins_edit_settings(project, annotator, reviewer, outsider):
    url = reverse("api-project-detail", args=[project.pk])
    assert api_as(annotator).patch(url, {"overlap": 3}, format="json").status_code == 403
    assert api_as(reviewer).patch(url, {"overlap": 3}, format="json").status_code == 403
    assert api_as(outsider).patch(url, {"overlap": 3}, format="json").status_code == 404
    project.refresh_from_db()
    assert project.overlap == 1


# --- Label classes ----------------------------------------------------------------------------


def test_members_list_the_classes_and_only_project_admins_add_them(
    project, annotator, project_admin, outsider
):
    listed = api_as(annotator).get(classes_url(project))
    assert [c["name"] for c in listed.json()] == ["positive", "negative", "neutral"]
    new = {"name": "mixed", "key": "m"}
    assert api_as(annotator).post(classes_url(project), new, format="json").status_code == 403
    assert api_as(outsider).post(classes_url(project), new, format="json").status_code == 404
    assert api_as(outsider).get(classes_url(project)).status_code == 404
    added = api_as(project_admin).post(classes_url(project), new, format="json")
    assert added.status_code == 201
    assert (added.json()["name"], added.json()["key"], added.json()["order"]) == ("mixed", "m", 3)
    again = api_as(project_admin).post(classes_url(project), new, format="json")
    assert again.status_code == 400 and "name" in again.json()


def test_a_rename_through_the_api_rewrites_every_stored_answer(project, annotator, project_admin):
    items = list(project.items.order_by("id")[:2])
    for item in items:
        submit_handed_out(
            item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4()
        )
    positive = project.label_classes.get(name="positive")
    response = api_as(project_admin).patch(
        classes_url(project, positive.pk), {"name": "good", "color": "#00aa00"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["name"], response.json()["color"]) == ("good", "#00aa00")
    labels = list(Annotation.objects.filter(project=project).values_list("labels", flat=True))
    assert labels == [["good"], ["good"]]
    gold = list(GoldLabel.objects.filter(project=project).values_list("labels", flat=True))
    assert gold == [["good"], ["good"]]
    assert project.class_names() == ["good", "negative", "neutral"]


def test_a_class_is_moved_retired_and_restored_and_a_used_one_is_not_deleted(
    project, annotator, project_admin
):
    client = api_as(project_admin)
    neutral = project.label_classes.get(name="neutral")
    moved = client.patch(classes_url(project, neutral.pk), {"order": 0}, format="json")
    assert moved.status_code == 200 and moved.json()["order"] == 0
    assert project.class_names() == ["neutral", "positive", "negative"]
    retired = client.patch(classes_url(project, neutral.pk), {"retired": True}, format="json")
    assert retired.json()["retired"] is True
    assert project.class_names().retired == {"neutral"}
    client.patch(classes_url(project, neutral.pk), {"retired": False}, format="json")
    assert not project.class_names().retired

    item = project.items.order_by("id").first()
    submit_handed_out(item=item, annotator=annotator, labels=["neutral"], client_uuid=uuid.uuid4())
    refused = client.delete(classes_url(project, neutral.pk))
    assert refused.status_code == 400
    assert "Retire it instead" in refused.json()["non_field_errors"][0]
    negative = project.label_classes.get(name="negative")
    assert client.delete(classes_url(project, negative.pk)).status_code == 204
    assert project.class_names() == ["neutral", "positive"]


def test_class_edits_that_would_clash_or_fall_outside_are_refused_naming_the_field(
    project, project_admin, annotator, other_project
):
    client = api_as(project_admin)
    positive = project.label_classes.get(name="positive")
    url = classes_url(project, positive.pk)
    same = client.patch(url, {"name": "negative", "order": 2}, format="json")
    assert same.status_code == 400 and "name" in same.json()
    far = client.patch(url, {"order": 9}, format="json")
    assert far.status_code == 400 and "from 0 to 2" in far.json()["order"][0]
    colour = client.patch(url, {"color": "green"}, format="json")
    assert colour.status_code == 400 and "color" in colour.json()
    assert project.class_names() == ["positive", "negative", "neutral"]
    assert api_as(annotator).patch(url, {"name": "x"}, format="json").status_code == 403
    elsewhere = other_project.label_classes.first()
    assert client.patch(classes_url(project, elsewhere.pk), {"name": "x"}).status_code == 404


# --- Members ----------------------------------------------------------------------------------


def test_a_project_admin_adds_changes_and_removes_members(project, project_admin, annotator):
    client = api_as(project_admin)
    listed = client.get(members_url(project)).json()
    assert {(m["username"], m["role"]) for m in listed} == {
        ("padmin", "admin"),
        ("annie", "annotator"),
    }
    newcomer = make_user("newcomer", email="new@x.test")
    added = client.post(members_url(project), {"user": "new@x.test", "role": "reviewer"})
    assert added.status_code == 201
    assert (added.json()["user_id"], added.json()["role"]) == (newcomer.pk, "reviewer")
    again = client.post(members_url(project), {"user": "newcomer"})
    assert again.status_code == 400 and "already a member" in again.json()["user"][0]
    unknown = client.post(members_url(project), {"user": "nobody"})
    assert unknown.status_code == 400 and "user" in unknown.json()

    promoted = client.patch(members_url(project, newcomer), {"role": "admin"}, format="json")
    assert promoted.status_code == 200 and promoted.json()["role"] == "admin"
    assert client.delete(members_url(project, annotator)).status_code == 204
    assert not Membership.objects.filter(project=project, user=annotator).exists()
    assert client.delete(members_url(project, annotator)).status_code == 404


def test_the_last_project_admin_can_neither_step_down_nor_leave(project, project_admin):
    client = api_as(project_admin)
    demoted = client.patch(members_url(project, project_admin), {"role": "annotator"})
    assert demoted.status_code == 400
    assert "at least one project admin" in demoted.json()["role"][0]
    left = client.delete(members_url(project, project_admin))
    assert left.status_code == 400
    assert "at least one project admin" in left.json()["non_field_errors"][0]
    assert Membership.objects.get(project=project, user=project_admin).role == Role.ADMIN


def test_only_project_admins_see_or_change_members(project, annotator, reviewer, outsider):
    for user, code in ((annotator, 403), (reviewer, 403), (outsider, 404)):
        client = api_as(user)
        assert client.get(members_url(project)).status_code == code
        assert client.post(members_url(project), {"user": "otto"}).status_code == code
        assert client.patch(members_url(project, annotator), {"role": "admin"}).status_code == (
            code
        )
        assert client.delete(members_url(project, annotator)).status_code == code
    assert Membership.objects.get(project=project, user=annotator).role == Role.ANNOTATOR


def test_a_site_admin_manages_members_of_any_project(project, superuser, annotator):
    client = api_as(superuser)
    response = client.patch(members_url(project, annotator), {"role": "reviewer"})
    assert response.status_code == 200
    assert Membership.objects.get(project=project, user=annotator).role == Role.REVIEWER
