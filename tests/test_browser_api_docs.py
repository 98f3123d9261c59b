"""The API's documentation page in a real browser: Swagger UI, served from this site, renders
every operation of the schema under the app's Content-Security-Policy, with no violation."""

from __future__ import annotations

import pytest
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator

from tests.test_browser import browser, expect  # noqa: F401 (fixtures)
from tests.test_browser_csp import assert_no_violation, csp_page, watch_console  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def test_the_docs_page_renders_every_operation_without_a_csp_violation(
    csp_page,  # noqa: F811
    live_server,
    annotator,
):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = sum(len(ops) for ops in schema["paths"].values())
    page = csp_page(annotator)
    console = watch_console(page)
    outside: list[str] = []
    page.on(
        "request", lambda r: None if r.url.startswith(live_server.url) else outside.append(r.url)
    )
    response = page.goto(reverse("api-docs"))
    assert response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".opblock")).to_have_count(operations, timeout=15_000)
    expect(page.locator(".info .title")).to_contain_text("dataprepops API")
    # One operation opens, with its responses (the schema's error answers among them).
    page.locator("#operations-projects-projects_list .opblock-summary").click()
    expect(page.locator("#operations-projects-projects_list .responses-table")).to_be_visible()
    expect(
        page.locator("#operations-projects-projects_list .response[data-code='403']")
    ).to_be_visible()
    assert_no_violation(page, console, "/api/docs/")
    assert outside == []  # nothing from a CDN
