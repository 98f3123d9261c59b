"""The OpenAPI schema: it describes every API endpoint without a generator warning (a new view
without a schema fails here: see annotations/api/schema.py for how to describe one), it and its
documentation page need a login, and the page runs without inline script or a CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.usefixtures("fast_passwords")


def _api_routes() -> set[str]:
    """Every route under /api/ as an OpenAPI path ("/api/projects/{id}/…")."""
    routes: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                routes.add("/" + prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    api = {r for r in routes if r.startswith("/api/")} - {"/api/schema/", "/api/docs/"}
    # Path converters become parameters; drf-spectacular calls the view's `pk` "id".
    return {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r).replace("{pk}", "{id}") for r in api}


def test_the_schema_describes_every_api_endpoint_without_a_warning(tmp_path):
    """`manage.py spectacular --validate --fail-on-warn`, as CI runs it: a view the generator
    cannot read (an APIView without `@extend_schema`) is a warning, and fails."""
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert set(schema["paths"]) == _api_routes()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert any(c.startswith("2") for c in codes), (method, path)
            assert {"401", "403", "429"} <= codes or path == "/api/auth/token/", (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": schemes["tokenAuth"]["description"],
    }
    assert schemes["cookieAuth"]["in"] == "cookie"


def test_the_schema_and_the_docs_page_need_a_login(client):
    assert client.get(reverse("api-schema")).status_code == 403
    response = client.get(reverse("api-docs"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_token_client_gets_the_schema_as_json(annotator):
    _, token = AuthToken.objects.create(user=annotator)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api.get(reverse("api-schema"), {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/projects/{id}/annotations/" in schema["paths"]


def test_the_docs_page_loads_swagger_ui_from_this_site_without_inline_code(client, annotator):
    client.force_login(annotator)
    response = client.get(reverse("api-docs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<style" not in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert len(scripts) == 3
    assert all('src="/' in attrs for attrs in scripts), scripts  # same site, no inline code
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any("swagger-ui-bundle.js" in a for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    # The set-up script the page loads (the split view's `?script`).
    setup = client.get(reverse("api-docs") + "?script=")
    assert setup.status_code == 200
    assert setup["Content-Type"].startswith("application/javascript")
    assert reverse("api-schema") in setup.content.decode()
