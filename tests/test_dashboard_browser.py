"""The dashboard in Chromium under the Content-Security-Policy: every plot (an SVG served by the
app, shown as an image) loads and draws, and neither the page nor a plot opened on its own
reports a violation."""

from __future__ import annotations

import uuid

import pytest

from annotations import queue
from annotations.models import Membership
from annotations.services import annotation_submit, project_set_overlap
from curation.dashboard import dashboard_refresh
from tests.test_browser import browser, member, reviews  # noqa: F401 (fixtures)
from tests.test_browser_csp import WATCH_CSP, assert_no_violation, csp_page, watch_console  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords", "data_dir"),
]


@pytest.fixture
def counted(reviews):  # noqa: F811
    """Two annotators answer six reviews each (two per item); the worker's refresh has run."""
    project = project_set_overlap(reviews, 2)
    for name, labels in (("annie", ["positive"]), ("bo", ["negative"])):
        user = member(project, name)
        for item in queue.next_items(project=project, user=user, count=6):
            annotation_submit(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())
    dashboard_refresh(project)
    return project, member(project, "rita", Membership.Role.REVIEWER)


def test_the_dashboards_plots_load_as_images_without_a_csp_violation(csp_page, counted):  # noqa: F811
    project, rita = counted
    page = csp_page(rita)
    console = watch_console(page)
    response = page.goto(f"/projects/{project.pk}/")
    assert response.ok
    assert "img-src 'self'" in response.headers["content-security-policy"]
    images = page.locator("figure.dash-plot img")
    assert images.count() >= 3  # progress and throughput per hour and per day, at least
    page.wait_for_function(
        "[...document.querySelectorAll('figure.dash-plot img')].every(i => i.complete)"
    )
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(width > 100 for width in widths), widths
    assert_no_violation(page, console, "dashboard")

    src = images.first.get_attribute("src")
    response = page.goto(src)  # a plot opened on its own is an SVG document
    assert response.ok and response.headers["content-type"].startswith("image/svg+xml")
    assert_no_violation(page, console, src)
