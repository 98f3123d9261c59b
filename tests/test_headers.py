"""Response headers every page carries: `Cache-Control: no-store` on whatever a logged-in user
receives (pages, API, item images) but not on static files, and a Content-Security-Policy that
allows no inline script on HTML pages."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from knox.models import AuthToken
from PIL import Image
from rest_framework.test import APIClient

from annotations.models import Item
from annotations.services import add_items_counted

pytestmark = pytest.mark.usefixtures("fast_passwords")


@pytest.fixture
def png_item(project, media_root) -> Item:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "blue").save(buffer, format="PNG")
    item = Item(project=project, external_id="blue.png", image_format="PNG")
    item.image.save("blue.png", io.BytesIO(buffer.getvalue()), save=False)
    item.save()
    add_items_counted(project, 1)
    return item


@pytest.mark.parametrize(
    "name",
    [
        "project_list",
        "project_detail",
        "annotate",
        "review",
        "project_quality",
        "project_settings",
        "admin:index",
    ],
)
def test_pages_for_a_logged_in_user_are_never_stored(client, project, project_admin, name):
    project_admin.is_staff = project_admin.is_superuser = True
    project_admin.save(update_fields=["is_staff", "is_superuser"])
    client.force_login(project_admin)
    url = (
        reverse(name)
        if name in ("project_list", "admin:index")
        else reverse(name, args=[project.pk])
    )
    response = client.get(url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_item_images_are_never_stored(client, annotator, project, png_item):
    client.force_login(annotator)
    response = client.get(reverse("item_image", args=[project.pk, png_item.pk]))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_api_answers_to_a_token_client_are_never_stored(annotator, project, png_item):
    _, token = AuthToken.objects.create(user=annotator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = api.get(reverse("api-project-list"))
    assert listed.status_code == 200
    assert listed["Cache-Control"] == "no-store"
    image = api.get(reverse("api-item-image", args=[project.pk, png_item.pk]))
    assert image.status_code == 200
    assert image["Cache-Control"] == "no-store"


def test_static_files_keep_their_own_caching(client, annotator):
    client.force_login(annotator)
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_html_pages_carry_a_csp_without_inline_script(client, annotator, project):
    client.force_login(annotator)
    for url in (reverse("login"), reverse("annotate", args=[project.pk])):
        csp = client.get(url)["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["connect-src"] == "'self'"  # covers ws:/wss: to this host (CSP 3)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
