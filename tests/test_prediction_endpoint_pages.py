"""The Prediction endpoint page, the API and the admin: project admins only, the URL checked at
save with a clear error, the auth header kept server-side and never shown back, the status
shown, CSRF on every POST."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations.models import PredictionEndpoint
from annotations.prediction_endpoint import endpoint_failed, endpoint_save

pytestmark = pytest.mark.usefixtures("fast_passwords")

PUBLIC_URL = "https://93.184.216.34/predict"
SECRET = "Bearer tok-0123456789-very-secret-WXYZ"


def page(project) -> str:
    return reverse("project_prediction_endpoint", args=[project.pk])


def api(project) -> str:
    return f"/api/projects/{project.pk}/prediction-endpoint/"


def put(client, project, **body):
    return client.put(api(project), {"url": PUBLIC_URL, **body}, content_type="application/json")


@pytest.fixture
def endpoint(project, project_admin) -> PredictionEndpoint:
    return endpoint_save(project=project, url=PUBLIC_URL, auth_header=SECRET, user=project_admin)


def test_outsiders_get_404_and_annotators_403_on_the_page_and_the_api(
    client, project, annotator, reviewer, outsider, endpoint
):
    client.force_login(outsider)
    assert client.get(page(project)).status_code == 404
    assert client.post(page(project), {"action": "delete"}).status_code == 404
    assert client.get(api(project)).status_code == 404
    assert put(client, project, enabled=False).status_code == 404
    assert client.delete(api(project)).status_code == 404
    for member in (annotator, reviewer):
        client.force_login(member)
        assert client.get(page(project)).status_code == 403
        assert client.post(page(project), {"action": "delete"}).status_code == 403
        assert client.get(api(project)).status_code == 403
        assert put(client, project, enabled=False).status_code == 403
        assert client.delete(api(project)).status_code == 403
    assert PredictionEndpoint.objects.get().enabled


def test_the_api_creates_reads_changes_and_deletes_it(client, project, project_admin):
    client.force_login(project_admin)
    assert client.get(api(project)).status_code == 404
    created = put(client, project, auth_header=SECRET, batch_size=16, timeout_seconds=5)
    assert created.status_code == 200, created.content
    body = created.json()
    assert body["url"] == PUBLIC_URL and body["batch_size"] == 16
    assert body["timeout_seconds"] == 5 and body["enabled"] and body["rank_queue"]
    assert body["auth_header_set"] and body["auth_header_hint"] == "…WXYZ"
    assert "auth_header" not in body and SECRET not in created.content.decode()
    assert body["model_name"] == "endpoint:93.184.216.34" and body["items_predicted"] == 0
    # Leaving the header out keeps it; "" removes it.
    changed = put(client, project, rank_queue=False)
    assert changed.json()["auth_header_set"] and not changed.json()["rank_queue"]
    assert PredictionEndpoint.objects.get().auth_header == SECRET
    assert not put(client, project, auth_header="").json()["auth_header_set"]
    assert client.delete(api(project)).status_code == 204
    assert not PredictionEndpoint.objects.exists()
    assert client.delete(api(project)).status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "http://127.0.0.1:8080/predict"}, "url", "127.0.0.1 is a loopback address"),
        ({"url": "http://10.0.0.5/predict"}, "url", "10.0.0.5 is a private address"),
        ({"url": "ftp://93.184.216.34/"}, "url", "Use an http:// or https:// URL"),
        ({"url": PUBLIC_URL, "batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"url": PUBLIC_URL, "timeout_seconds": 10_000}, "timeout_seconds", "less than or equal"),
        ({"url": PUBLIC_URL, "auth_header": "a\nb"}, "auth_header", "no line breaks"),
    ],
)
def test_a_bad_setting_is_refused_with_what_and_where(
    client, project, project_admin, body, field, says
):
    client.force_login(project_admin)
    response = client.put(api(project), body, content_type="application/json")
    assert response.status_code == 400
    assert says in " ".join(response.json()[field])
    assert not PredictionEndpoint.objects.exists()


def test_the_page_saves_it_and_shows_the_status_without_the_header(client, project, project_admin):
    client.force_login(project_admin)
    assert client.get(page(project)).status_code == 200
    response = client.post(
        page(project),
        {
            "action": "save",
            "url": PUBLIC_URL,
            "auth_header": SECRET,
            "batch_size": 8,
            "timeout_seconds": 20,
            "enabled": "on",
            "rank_queue": "on",
        },
    )
    assert response.status_code == 302
    endpoint = PredictionEndpoint.objects.get()
    assert endpoint.auth_header == SECRET and endpoint.batch_size == 8
    endpoint_failed(endpoint, error="Answer refused, nothing stored: <b>bad</b> id 'x'")
    shown = client.get(page(project)).content.decode()
    assert SECRET not in shown and "…WXYZ" in shown
    assert "Answer refused, nothing stored: &lt;b&gt;bad&lt;/b&gt;" in shown  # escaped
    assert "Failures in a row" in shown
    # Saved again without a header: the stored one stays.
    client.post(
        page(project),
        {"action": "save", "url": PUBLIC_URL, "batch_size": 8, "timeout_seconds": 20},
    )
    endpoint.refresh_from_db()
    assert endpoint.auth_header == SECRET and not endpoint.enabled


def test_the_page_refuses_a_loopback_url_with_the_reason(client, project, project_admin):
    client.force_login(project_admin)
    response = client.post(
        page(project),
        {"action": "save", "url": "http://localhost:9/", "batch_size": 8, "timeout_seconds": 20},
    )
    assert response.status_code == 400
    assert "loopback address" in response.content.decode()
    assert not PredictionEndpoint.objects.exists()


def test_the_page_removes_it(client, project, project_admin, endpoint):
    client.force_login(project_admin)
    assert client.post(page(project), {"action": "delete"}).status_code == 302
    assert not PredictionEndpoint.objects.exists()


def test_posts_need_the_csrf_token(project, project_admin):
    client = Client(enforce_csrf_checks=True)
    client.force_login(project_admin)
    assert client.post(page(project), {"action": "save", "url": PUBLIC_URL}).status_code == 403
    assert not PredictionEndpoint.objects.exists()


def test_the_admin_disables_and_deletes_through_the_services(client, superuser, endpoint):
    client.force_login(superuser)
    listing = reverse("admin:annotations_predictionendpoint_changelist")
    shown = client.get(reverse("admin:annotations_predictionendpoint_change", args=[endpoint.pk]))
    assert shown.status_code == 200 and SECRET not in shown.content.decode()
    client.post(listing, {"action": "disable", "_selected_action": [endpoint.pk]})
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    client.post(listing, {"action": "enable", "_selected_action": [endpoint.pk]})
    endpoint.refresh_from_db()
    assert endpoint.enabled
