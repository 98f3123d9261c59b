"""Requests Django refuses before an API view runs still get the API's JSON errors (found by
the schema fuzzer, tests/test_api_fuzz.py): a path that matches no route and a form body over
the field limit answered with HTML pages; people keep Django's pages."""

from __future__ import annotations

import pytest
from django.urls import reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.usefixtures("fast_passwords")


@pytest.fixture
def api(project_admin) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Token {AuthToken.objects.create(user=project_admin)[1]}"
    )
    return client


def test_an_api_path_that_matches_no_route_gets_a_json_404(api, project):
    # An item id that is not a number: no route matches, so no view runs.
    response = api.get(f"/api/projects/{project.pk}/reviews/null,null/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_page_that_matches_no_route_still_gets_the_html_404(client, project_admin):
    client.force_login(project_admin)
    response = client.get("/projects/not-a-number/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_form_body_over_the_field_limit_gets_a_json_400(api, project, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {"action": "review", "items": [str(i) for i in range(1, 20)]}
    response = api.post(reverse("api-item-actions", args=[project.pk]), fields, format="multipart")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" in response.json()["detail"]
