"""A cursor the API did not make is a bad request (400) naming the parameter, never a 500."""

from __future__ import annotations

import base64

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "é",
        cursor("p=abc"),  # decodes fine, but the position is not an id: was a 500
        cursor("p=1.5"),
        cursor("p=99999999999999999999999"),  # beyond a bigint: was a 500 from the database
        cursor("o=-1"),
        cursor("r=yes"),
    ],
    ids=["garbage", "non-ascii", "text-position", "float", "huge", "offset", "reverse"],
)
@pytest.mark.parametrize("route", ["api-item-list", "api-annotation-list"])
def test_a_malformed_cursor_is_a_bad_request(annotator, project, route, value):
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.get(reverse(route, args=[project.pk]), {"cursor": value})
    assert response.status_code == 400
    assert response.json() == {
        "cursor": ["Invalid cursor: follow the next/previous links of a page."]
    }


def test_a_cursor_the_api_made_still_pages(annotator, project):
    client = APIClient()
    client.force_authenticate(annotator)
    first = client.get(reverse("api-item-list", args=[project.pk]), {"page_size": 5}).json()
    second = client.get(first["next"])
    assert second.status_code == 200
    assert len(second.json()["results"]) == 5
    assert second.json()["results"][0]["id"] > first["results"][-1]["id"]


def test_projects_list_refuses_a_malformed_cursor_too(annotator, project):
    client = APIClient()
    client.force_authenticate(annotator)
    response = client.get(reverse("api-project-list"), {"cursor": cursor("p=x")})
    assert response.status_code == 400
