"""The Django admin writes through the same services as the project's pages: the "one project
admin" rule and its message, the settings' side effects, the frozen schema, label classes,
pinned items; and site admins who create projects there can manage them in the app."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from annotations import queue, services
from annotations.assignments import assignment_create
from annotations.members import _LAST_ADMIN
from annotations.models import GoldLabel, Item, ItemAssignment, LabelClass, Membership, Project
from curation.services import train_project_once
from tests import test_websocket
from tests.conftest import make_user
from tests.test_admin import changelist_action, form_data

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]

# The websocket test's fixtures: the real ASGI application and an in-memory channel layer.
asgi_app = test_websocket.asgi_app
memory_layer = test_websocket.memory_layer

Role = Membership.Role


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser)
    return client


def change_url(project: Project) -> str:
    return reverse("admin:annotations_project_change", args=[project.pk])


def inline_row(data: dict, membership: Membership) -> int:
    for key, value in data.items():
        if (
            key.startswith("memberships-")
            and key.endswith("-id")
            and str(value) == str(membership.pk)
        ):
            return int(key.split("-")[1])
    raise AssertionError(f"no inline row for {membership}")


# --- Members ----------------------------------------------------------------------------------


def test_the_project_inline_cannot_demote_the_last_project_admin(
    admin_client_, project, project_admin
):
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    row = inline_row(data, Membership.objects.get(user=project_admin))
    data[f"memberships-{row}-role"] = Role.ANNOTATOR
    response = admin_client_.post(url, data)
    assert response.status_code == 200
    assert _LAST_ADMIN in response.content.decode()
    assert Membership.objects.get(user=project_admin).role == Role.ADMIN


def test_the_project_inline_cannot_remove_the_last_project_admin(
    admin_client_, project, project_admin
):
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    row = inline_row(data, Membership.objects.get(user=project_admin))
    data[f"memberships-{row}-DELETE"] = "on"
    response = admin_client_.post(url, data)
    assert response.status_code == 200
    assert _LAST_ADMIN in response.content.decode()
    assert Membership.objects.filter(user=project_admin).exists()


def test_a_hand_over_of_the_admin_role_in_one_save_goes_through(
    admin_client_, project, project_admin, reviewer
):
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    data[f"memberships-{inline_row(data, Membership.objects.get(user=project_admin))}-role"] = (
        Role.REVIEWER
    )
    data[f"memberships-{inline_row(data, Membership.objects.get(user=reviewer))}-role"] = Role.ADMIN
    assert admin_client_.post(url, data).status_code == 302
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles == {"padmin": Role.REVIEWER, "rev": Role.ADMIN}


def test_giving_a_membership_row_to_another_user_drops_the_old_users_assignments(
    admin_client_, project, project_admin, annotator, superuser
):
    item = Item.objects.filter(project=project).first()
    assignment_create(project=project, items=[item], users=[annotator], assigned_by=superuser)
    newcomer = make_user("newcomer")
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    row = inline_row(data, Membership.objects.get(user=annotator))
    data[f"memberships-{row}-user"] = str(newcomer.pk)
    assert admin_client_.post(url, data).status_code == 302
    assert not Membership.objects.filter(user=annotator).exists()
    assert Membership.objects.get(user=newcomer).role == Role.ANNOTATOR
    assert not ItemAssignment.objects.filter(user=annotator).exists()
    item.refresh_from_db()
    assert item.required_answers is None  # back in the shared queue


def test_the_membership_page_refuses_to_demote_or_delete_the_last_admin(
    admin_client_, project, project_admin
):
    membership = Membership.objects.get(user=project_admin)
    url = reverse("admin:annotations_membership_change", args=[membership.pk])
    response = admin_client_.post(url, {"role": Role.ANNOTATOR})
    assert response.status_code == 200
    assert _LAST_ADMIN in response.content.decode()
    delete = reverse("admin:annotations_membership_delete", args=[membership.pk])
    page = admin_client_.get(delete)
    assert _LAST_ADMIN in page.content.decode()
    admin_client_.post(delete, {"post": "yes"})
    response = changelist_action(admin_client_, "membership", "delete_selected", [membership.pk])
    assert _LAST_ADMIN in response.content.decode()
    admin_client_.post(
        reverse("admin:annotations_membership_changelist"),
        {"action": "delete_selected", "_selected_action": [membership.pk], "post": "yes"},
    )
    assert Membership.objects.get(pk=membership.pk).role == Role.ADMIN


def test_the_membership_page_adds_and_changes_roles_through_the_services(
    admin_client_, project, project_admin
):
    newcomer = make_user("newcomer")
    add = reverse("admin:annotations_membership_add")
    response = admin_client_.post(
        add, {"project": project.pk, "user": newcomer.pk, "role": Role.REVIEWER}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer)
    url = reverse("admin:annotations_membership_change", args=[membership.pk])
    assert admin_client_.post(url, {"role": Role.ADMIN}).status_code == 302
    # Now padmin may step down: newcomer is project admin too.
    padmin = Membership.objects.get(user=project_admin)
    url = reverse("admin:annotations_membership_change", args=[padmin.pk])
    assert admin_client_.post(url, {"role": Role.ANNOTATOR}).status_code == 302
    assert Membership.objects.get(user=project_admin).role == Role.ANNOTATOR


# --- Settings and schema ----------------------------------------------------------------------


def test_a_new_review_threshold_in_admin_rebuilds_the_review_queue(
    admin_client_, project, annotator, reviewer, project_admin
):
    """Through `project_settings_update`, like the Settings page: the rule applies at once."""
    Project.objects.filter(pk=project.pk).update(overlap=3)
    item = Item.objects.filter(project=project).order_by("priority").last()
    votes = ((annotator, "positive"), (reviewer, "positive"), (project_admin, "negative"))
    for user, label in votes:
        queue.next_items(project=project, user=user, count=20)
        services.annotation_submit(
            item=Item.objects.select_related("project").get(pk=item.pk),
            annotator=user,
            labels=[label],
            client_uuid=uuid.uuid4(),
        )
    assert not Item.objects.filter(pk=item.pk, review__isnull=False).exists()  # 2 of 3 pass
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    data["review_threshold"] = "0.9"
    assert admin_client_.post(url, data).status_code == 302
    assert Item.objects.get(pk=item.pk).review.reasons == ["disagreement"]
    assert GoldLabel.objects.get(item=item).labels == ["positive"]


def test_item_kind_and_labelling_mode_are_read_only_in_admin_once_items_exist(
    admin_client_, project
):
    url = change_url(project)
    page = admin_client_.get(url)
    assert "item_kind" not in page.context["adminform"].form.fields
    data = form_data(page)
    data["item_kind"] = "image"
    data["labeling_mode"] = "multi"
    assert admin_client_.post(url, data).status_code == 302
    project.refresh_from_db()
    assert (project.item_kind, project.labeling_mode) == ("text", "single")


def test_the_label_class_inline_is_read_only_once_the_project_exists(admin_client_, project):
    url = change_url(project)
    data = form_data(admin_client_.get(url))
    assert "label_classes-0-name" not in data
    html = admin_client_.get(url).content.decode()
    assert reverse("project_label_classes", args=[project.pk]) in html
    data.update({"label_classes-0-name": "renamed", "label_classes-0-id": "1"})
    assert admin_client_.post(url, data).status_code == 302
    assert project.class_names() == ["positive", "negative", "neutral"]
    assert admin_client_.get(reverse("admin:annotations_labelclass_add")).status_code == 403


# --- The queue --------------------------------------------------------------------------------


def test_an_item_moved_to_the_front_stays_there_after_the_model_reranks(
    admin_client_, data_dir, project, annotator, reviewer
):
    last = Item.objects.filter(project=project).order_by("priority").first()
    changelist_action(admin_client_, "item", "move_to_front", [last.pk])
    held = queue.next_items(project=project, user=reviewer, count=3)
    assert held[0] == last
    for item in held[1:]:
        item.project = project
        services.annotation_submit(
            item=item, annotator=reviewer, labels=["positive"], client_uuid=uuid.uuid4()
        )
    queue.release_lease(item=last, user=reviewer)
    assert train_project_once(project) is not None
    (served,) = queue.next_items(project=project, user=annotator, count=1)
    assert served == last


# --- Site admins ------------------------------------------------------------------------------


def new_project_data(admin_client_, name: str, *, make_me_admin: bool) -> dict:
    data = form_data(admin_client_.get(reverse("admin:annotations_project_add")))
    data.update(
        {
            "name": name,
            "label_classes-TOTAL_FORMS": "2",
            "label_classes-0-name": "cat",
            "label_classes-0-order": "0",
            "label_classes-0-color": "#123456",
            "label_classes-1-name": "dog",
            "label_classes-1-order": "1",
            "label_classes-1-color": "#654321",
        }
    )
    if not make_me_admin:
        data.pop("make_me_admin", None)
    return data


def test_a_site_admin_who_creates_a_project_in_admin_becomes_its_project_admin(
    admin_client_, superuser, db
):
    data = new_project_data(admin_client_, "Pets", make_me_admin=True)
    assert data.get("make_me_admin") == "on"  # ticked by default
    response = admin_client_.post(reverse("admin:annotations_project_add"), data)
    assert response.status_code == 302
    project = Project.objects.get(name="Pets")
    assert Membership.objects.get(project=project, user=superuser).role == Role.ADMIN
    assert project.class_names() == ["cat", "dog"]
    for route in ("project_detail", "project_settings", "project_label_classes", "annotate"):
        assert admin_client_.get(reverse(route, args=[project.pk])).status_code == 200, route


def test_a_site_admin_who_opts_out_is_no_member_but_can_still_open_every_page(
    admin_client_, superuser, db
):
    data = new_project_data(admin_client_, "Birds", make_me_admin=False)
    assert admin_client_.post(reverse("admin:annotations_project_add"), data).status_code == 302
    project = Project.objects.get(name="Birds")
    assert not Membership.objects.filter(project=project).exists()
    for route in ("project_detail", "project_settings", "project_members", "project_quality"):
        assert admin_client_.get(reverse(route, args=[project.pk])).status_code == 200, route
    detail = admin_client_.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "as a site admin" in detail
    listing = admin_client_.get(reverse("project_list")).content.decode()
    assert "Birds" in listing and "Site admin" in listing
    api = admin_client_.get(reverse("api-project-list")).json()
    assert [(p["name"], p["role"]) for p in api["results"]] == [("Birds", "admin")]


def test_staff_who_are_not_superusers_still_get_404_on_projects_they_are_not_in(client, project):
    staff = make_user("staffer", is_staff=True)
    client.force_login(staff)
    for route in ("project_detail", "project_settings", "annotate"):
        assert client.get(reverse(route, args=[project.pk])).status_code == 404, route
    assert LabelClass.objects.filter(project=project).count() == 3


@pytest.mark.django_db(transaction=True)
async def test_a_site_admin_hears_a_projects_events_on_its_websocket(
    asgi_app, memory_layer, project, superuser, annotator
):
    await test_websocket.assert_progress_after_submit(asgi_app, project, superuser)


def test_training_settings_edited_in_the_curation_admin_are_saved_through_the_service(
    admin_client_, project
):
    from curation.models import ProjectTraining

    add = reverse("admin:curation_projecttraining_add")
    data = {
        "project": project.pk,
        "strategy": "margin",
        "exploration": "0.2",
        "eval_share": "0.1",
        "suggestions": "off",
    }
    assert admin_client_.post(add, data).status_code == 302
    row = ProjectTraining.objects.get(project=project)
    assert (row.exploration, row.suggestions) == (0.2, "off")
    change = reverse("admin:curation_projecttraining_change", args=[row.pk])
    response = admin_client_.post(change, {**data, "eval_share": "0.9"})
    assert response.status_code == 200  # refused by the field's bounds, nothing saved
    assert ProjectTraining.objects.get(project=project).eval_share == 0.1
    assert admin_client_.post(change, {**data, "exploration": "0.3"}).status_code == 302
    assert ProjectTraining.objects.get(project=project).exploration == 0.3
