"""Dataset versions in a real browser, on the real ASGI server with its embedded worker: a
reviewer opens the project's dashboard, saves a version, an annotator labels more by keyboard,
the reviewer saves another, reads the diff between the two, and finds both on the dashboard."""

from __future__ import annotations

import uuid

import pytest

from annotations.models import Annotation, Membership
from curation.version_models import DatasetVersion
from tests.conftest import submit_handed_out
from tests.test_browser import (  # noqa: F401 (fixtures)
    asgi_server,
    browser,
    choice,
    current_ext_id,
    expect,
    member,
    open_asgi_page,
    reviews,
    wait_until,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def save_version(page, name: str, note: str) -> None:
    page.fill("#version-name", name)
    page.fill("#version-note", note)
    page.locator("#version-create button[type=submit]").click()
    # Written by the embedded worker; the table refreshes itself until it is ready.
    expect(page.locator(f'#versions-table tr[data-version="{name}"] td.num').first).to_be_visible(
        timeout=15_000
    )


def test_a_reviewer_saves_a_version_labels_more_saves_another_and_reads_the_diff(
    open_asgi_page,  # noqa: F811 (fixtures from tests.test_browser)
    reviews,  # noqa: F811
):
    project = reviews
    annie = member(project, "annie")
    rita = member(project, "rita", Membership.Role.REVIEWER)
    items = list(project.items.order_by("id"))
    for item in items[:4]:  # review-0 .. review-3: positive
        submit_handed_out(item=item, annotator=annie, labels=["positive"], client_uuid=uuid.uuid4())

    page = open_asgi_page(rita, f"/projects/{project.pk}/")
    expect(page.locator("#dash-progress")).to_be_visible()  # the reviewer's dashboard
    expect(page.locator("#dash-versions")).to_be_visible()
    page.get_by_role("link", name="Versions").first.click()
    expect(page.locator("#versions-table")).to_contain_text("No versions yet")
    save_version(page, "before", "four labels")
    row = page.locator('#versions-table tr[data-version="before"]')
    expect(row).to_contain_text("four labels")
    expect(row.locator("td.num").nth(1)).to_have_text("4")  # labelled

    labeller = open_asgi_page(annie, f"/projects/{project.pk}/annotate/")
    expect(current_ext_id(labeller)).to_have_text("review-4")
    answered = []  # the model re-ranks the queue as labels come: whatever it serves next
    for key, name in (("2", "negative"), ("2", "negative"), ("u", "neutral")):
        shown = current_ext_id(labeller).inner_text()
        labeller.keyboard.press(key)
        expect(choice(labeller, name)).to_have_class("choice on")
        labeller.keyboard.press("Enter")
        expect(current_ext_id(labeller)).not_to_have_text(shown)
        answered.append(shown)
    wait_until(
        labeller,
        lambda: Annotation.objects.filter(project=project).count() == 7,
        "the three new answers are stored",
    )

    page.reload()
    save_version(page, "after", "three more")
    expect(page.locator('#versions-table tr[data-version="after"] td.num').nth(1)).to_have_text("7")
    page.select_option("#diff-from", "before")
    page.select_option("#diff-to", "after")
    page.locator("#version-compare button[type=submit]").click()
    expect(page.locator("h1")).to_have_text("From before to after")
    expect(page.locator("#diff-summary")).to_contain_text("3")
    pairs = page.locator("#diff-pairs tbody tr")
    expect(pairs).to_have_count(2)
    expect(pairs.first).to_contain_text("(none)")
    expect(pairs.first).to_contain_text("negative")
    expect(pairs.first.locator("td.num")).to_have_text("2")
    pairs.first.locator("a").click()  # the items behind that pair
    expect(page.locator("#diff-changes tbody tr")).to_have_count(2)
    for external_id in answered[:2]:  # the two answered "negative"
        expect(page.locator("#diff-changes")).to_contain_text(external_id)
    # Back on the dashboard: both versions, and the worker's numbers for the seven answers.
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#dash-versions-table")).to_contain_text("before")
    expect(page.locator("#dash-versions-table")).to_contain_text("after")
    expect(page.locator("#dash-as-of")).to_be_visible()
    assert set(DatasetVersion.objects.values_list("name", "status")) == {
        ("before", "ready"),
        ("after", "ready"),
    }
