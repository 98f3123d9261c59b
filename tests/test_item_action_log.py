"""The project's record of data actions: a page for reviewers and project admins, linked from
the data browser, and its API twin, newest first a page at a time, each action with who, when,
what, how many items, why and on which selection (with a link back to the browser's filter)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from annotations import action_log, bulk
from annotations.bulk import Selection
from annotations.models import Item, Review

pytestmark = pytest.mark.usefixtures("fast_passwords")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_lists_each_action_with_who_what_why_and_a_link_back_to_its_filter(
    project, reviewer
):
    ids = list(Item.objects.filter(project=project).values_list("pk", flat=True)[:2])
    bulk.items_send_to_review(
        project=project,
        user=reviewer,
        selection=Selection.of_ids(ids),
        reason=Review.Reason.LABEL_ERROR,
        note="<b>look</b>",
    )
    bulk.items_send_to_review(
        project=project, user=reviewer, selection=Selection.matching("status=open")
    )
    client = logged_in(reviewer)
    browser = client.get(reverse("project_data", args=[project.pk])).content.decode()
    url = reverse("project_item_actions", args=[project.pk])
    assert f'href="{url}"' in browser

    page = client.get(url).content.decode()
    assert "Likely label error" in page and "2 picked items" in page
    assert "&lt;b&gt;look&lt;/b&gt;" in page  # user text is never HTML
    assert f'href="{reverse("project_data", args=[project.pk])}?status=open"' in page
    assert page.index("status=open") < page.index("2 picked items")  # newest first


def test_the_page_and_the_api_go_back_a_page_at_a_time(project, reviewer, monkeypatch):
    monkeypatch.setattr("annotations.views.bulk.PAGE_SIZE", 2)
    item = Item.objects.filter(project=project).first()
    for _ in range(3):
        bulk.items_send_to_review(
            project=project, user=reviewer, selection=Selection.of_ids([item.pk])
        )
    newest, middle, oldest = action_log.item_actions_for(project)
    client = logged_in(reviewer)
    url = reverse("project_item_actions", args=[project.pk])
    first = client.get(url).content.decode()
    assert f'data-action="{newest.pk}"' in first and f'data-action="{oldest.pk}"' not in first
    assert f"?before={middle.pk}" in first
    second = client.get(f"{url}?before={middle.pk}").content.decode()
    assert f'data-action="{oldest.pk}"' in second and 'rel="next"' not in second
    assert client.get(f"{url}?before=x").status_code == 400

    api = APIClient()
    api.force_authenticate(reviewer)
    log_url = reverse("api-item-action-log", args=[project.pk])
    body = api.get(log_url, {"page_size": 2}).json()
    assert [a["id"] for a in body["results"]] == [newest.pk, middle.pk]
    assert body["results"][0]["user"] == reviewer.username
    assert body["results"][0]["picked"] == 1 and body["results"][0]["browser_url"] is None
    rest = api.get(body["next"]).json()
    assert [a["id"] for a in rest["results"]] == [oldest.pk]


def test_annotators_and_outsiders_do_not_see_the_log(project, annotator, outsider):
    url = reverse("project_item_actions", args=[project.pk])
    assert logged_in(annotator).get(url).status_code == 403
    assert logged_in(outsider).get(url).status_code == 404
