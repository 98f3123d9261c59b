"""Bulk actions through their clients: the REST API, the data browser's bar (confirm, then run),
`manage.py items_action` and the Django admin, with the roles each allows."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotations.models import Item, ItemAction, ItemRelabel, Project, Review
from tests.conftest import submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def actions_url(project: Project) -> str:
    return reverse("api-item-actions", args=[project.pk])


def first_ids(project: Project, n: int) -> list[int]:
    return list(
        Item.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)[:n]
    )


def complete(project: Project, user, ids: list[int]) -> None:
    for item in Item.objects.filter(pk__in=ids):
        submit_handed_out(item=item, annotator=user, labels=["positive"], client_uuid=uuid.uuid4())


# --- API --------------------------------------------------------------------------------------


def test_a_dry_run_counts_the_items_matching_a_filter_and_changes_nothing(
    project, annotator, reviewer
):
    complete(project, annotator, first_ids(project, 3))
    response = api_as(reviewer).post(
        actions_url(project),
        {"action": "review", "filter": "status=complete", "dry_run": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "review", "dry_run": True, "count": 3}
    assert not Review.objects.exists() and not ItemAction.objects.exists()


def test_the_api_sends_all_matching_items_to_review_with_a_reason(project, annotator, reviewer):
    complete(project, annotator, first_ids(project, 2))
    response = api_as(reviewer).post(
        actions_url(project),
        {"action": "review", "filter": "status=complete", "reason": "label_error", "note": "x"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["done"] == 2
    assert set(Review.objects.values_list("item_id", flat=True)) == set(first_ids(project, 2))
    action = ItemAction.objects.get()
    assert action.filter == "status=complete" and action.user == reviewer


def test_the_api_relabels_and_assigns_picked_items(project, annotator, project_admin):
    ids = first_ids(project, 2)
    complete(project, annotator, ids[:1])
    client = api_as(project_admin)
    relabel = client.post(
        actions_url(project), {"action": "relabel", "items": ids}, format="json"
    ).json()
    assert (relabel["done"], relabel["skipped"]) == (1, 1)
    assert ItemRelabel.objects.get().item_id == ids[0]
    assign = client.post(
        actions_url(project),
        {"action": "assign", "items": ids[1:], "users": ["annie"]},
        format="json",
    )
    assert assign.status_code == 200, assign.content
    assert Item.objects.get(pk=ids[1]).required_answers == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "explode", "items": [1]}, "action"),
        ({"action": "review"}, "items"),
        ({"action": "review", "items": [1], "filter": ""}, "items"),
        ({"action": "review", "items": ["x"]}, "items"),
        ({"action": "review", "filter": "status=nonsense"}, "filter"),
        ({"action": "review", "filter": "", "reason": "because"}, "reason"),
        ({"action": "assign", "filter": ""}, "users"),
        ({"action": "assign", "filter": "", "users": ["nobody"]}, "users"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(
    project, project_admin, body, field
):
    response = api_as(project_admin).post(actions_url(project), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not ItemAction.objects.exists() and not Review.objects.exists()


def test_ids_of_another_project_are_a_400_and_change_nothing(project, other_project, reviewer):
    theirs = first_ids(other_project, 1)
    response = api_as(reviewer).post(
        actions_url(project), {"action": "review", "items": theirs}, format="json"
    )
    assert response.status_code == 400 and "items" in response.json()
    assert not Review.objects.exists()


@pytest.mark.parametrize(
    ("who", "action", "status"),
    [
        ("outsider", "review", 404),
        ("outsider", "delete", 404),
        ("annotator", "review", 403),
        ("annotator", "relabel", 403),
        ("reviewer", "review", 200),
        ("reviewer", "relabel", 200),
        ("reviewer", "assign", 403),
        ("reviewer", "delete", 403),
        ("project_admin", "delete", 200),
        ("superuser", "delete", 200),
    ],
)
def test_who_may_run_which_action_through_the_api(request, project, who, action, status):
    user = request.getfixturevalue(who)
    before = Item.objects.filter(project=project).count()
    response = api_as(user).post(
        actions_url(project), {"action": action, "items": first_ids(project, 1)}, format="json"
    )
    assert response.status_code == status, response.content
    if status != 200:
        assert Item.objects.filter(project=project).count() == before
        assert not ItemAction.objects.exists()


def test_the_api_exports_a_selection_by_filter(project, annotator, reviewer):
    complete(project, annotator, first_ids(project, 2))
    url = reverse("api-item-export", args=[project.pk, "jsonl"])
    response = api_as(reviewer).get(url, {"status": "complete"})
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["status"] == "complete" for line in lines)


@pytest.mark.parametrize(("who", "status"), [("outsider", 404), ("annotator", 403)])
def test_outsiders_and_annotators_cannot_export_a_selection(request, project, who, status):
    user = request.getfixturevalue(who)
    response = api_as(user).get(reverse("api-item-export", args=[project.pk, "csv"]))
    assert response.status_code == status


# --- The page's bar ---------------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_bar_asks_to_confirm_with_the_count_then_runs_the_action(project, reviewer):
    ids = first_ids(project, 3)
    client = logged_in(reviewer)
    url = reverse("items_bulk", args=[project.pk])
    confirm = client.post(
        url, {"action": "review", "item": ids, "reason": "flag"}, headers={"HX-Request": "true"}
    )
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "<b>3</b> items will be sent to review" in page and 'name="confirmed"' in page
    assert not Review.objects.exists()
    done = client.post(
        url,
        {"action": "review", "item": ids, "reason": "flag", "confirmed": "1"},
        headers={"HX-Request": "true"},
    )
    assert done.status_code == 200 and "HX-Redirect" in done.headers
    assert Review.objects.count() == 3


def test_the_bar_confirms_all_matching_items_without_javascript(project, annotator, reviewer):
    complete(project, annotator, first_ids(project, 2))
    response = logged_in(reviewer).post(
        reverse("items_bulk", args=[project.pk]),
        {"action": "relabel", "all_matching": "1", "filter": "status=complete"},
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "<b>2</b> items will be sent back for relabelling" in page
    assert 'name="filter" value="status=complete"' in page


def test_the_bar_needs_a_csrf_token(project, reviewer):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    response = client.post(
        reverse("items_bulk", args=[project.pk]),
        {"action": "review", "item": first_ids(project, 1), "confirmed": "1"},
    )
    assert response.status_code == 403 and not Review.objects.exists()


@pytest.mark.parametrize(
    ("who", "action", "status"),
    [
        ("outsider", "review", 404),
        ("annotator", "review", 403),
        ("reviewer", "delete", 403),
        ("reviewer", "assign", 403),
        ("project_admin", "delete", 302),
    ],
)
def test_who_may_use_the_bar(request, project, who, action, status):
    user = request.getfixturevalue(who)
    response = logged_in(user).post(
        reverse("items_bulk", args=[project.pk]),
        {"action": action, "item": first_ids(project, 1), "confirmed": "1"},
    )
    assert response.status_code == status
    assert Item.objects.filter(project=project).count() == (19 if status == 302 else 20)


def test_the_bar_downloads_a_confirmed_export(project, reviewer):
    response = logged_in(reviewer).post(
        reverse("items_bulk", args=[project.pk]),
        {"action": "export", "item": first_ids(project, 2), "format": "csv", "confirmed": "1"},
    )
    assert response.status_code == 200
    assert "selection.csv" in response["Content-Disposition"]
    assert len(b"".join(response.streaming_content).decode().splitlines()) == 3


# --- The command and the admin ----------------------------------------------------------------


def test_the_command_counts_without_yes_and_acts_with_it(project, annotator):
    complete(project, annotator, first_ids(project, 2))
    out = io.StringIO()
    call_command("items_action", project.name, "review", "--filter", "status=complete", stdout=out)
    assert "2 item(s)" in out.getvalue() and not Review.objects.exists()
    call_command(
        "items_action",
        str(project.pk),
        "review",
        "--filter",
        "status=complete",
        "--reason",
        "duplicate",
        "--yes",
        "--no-progress",
        stdout=io.StringIO(),
    )
    assert [r.reasons for r in Review.objects.all()] == [["duplicate"], ["duplicate"]]
    assert ItemAction.objects.get().user is None


def test_the_command_names_a_bad_filter(project):
    with pytest.raises(CommandError, match="filter"):
        call_command("items_action", project.name, "delete", "--filter", "status=bogus")


def test_the_admin_action_goes_through_the_bulk_service(project, annotator, superuser):
    ids = first_ids(project, 2)
    complete(project, annotator, ids[:1])
    client = logged_in(superuser)
    response = client.post(
        reverse("admin:annotations_item_changelist"),
        {"action": "send_to_relabel", "_selected_action": ids},
    )
    assert response.status_code == 302
    action = ItemAction.objects.get()
    assert (action.action, action.user, action.done_count) == ("relabel", superuser, 1)
    response = client.post(
        reverse("admin:annotations_item_changelist"),
        {"action": "send_to_review", "_selected_action": ids},
    )
    assert ItemAction.objects.filter(action="review").get().item_count == 2
    assert Review.objects.count() == 2
