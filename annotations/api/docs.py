"""The schema and its documentation page: /api/schema/ (OpenAPI 3, YAML or `?format=json`) and
/api/docs/ (Swagger UI), both for logged-in users only."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
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
docs_view = login_required(DocsView.as_view(url_name="api-schema"))
