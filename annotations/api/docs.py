"""The schema and its documentation page: /api/schema/ (OpenAPI 3, YAML or `?format=json`) and
/api/docs/ (Swagger UI), both for logged-in users only."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotations.api import schema  # noqa: F401 - registers the token scheme for the page


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI from drf-spectacular-sidecar's files (no CDN). The split view serves its
    set-up as a script file (`?script`), so the page runs under the CSP without inline script;
    templates/api/docs.html moves the inline style to a static file."""

    template_name = "api/docs.html"
    title = "dataprepops API"


schema_view = SpectacularAPIView.as_view()
# A person's page: without a session, the login page (then back here), not a JSON 403.
_docs = login_required(DocsView.as_view(url_name="api-schema"))


def docs_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The page without DRF's CSRF exemption (which `functools.wraps` would carry over): a
    page read with the session cookie gets the CSRF check on unsafe methods like every page."""
    return _docs(request, *args, **kwargs)
