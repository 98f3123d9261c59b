"""The Content-Security-Policy in a real browser, and the keyboard/screen-reader semantics of the
annotate and review pages: every main page (and Django's admin) loads without a single CSP
violation, labelling by keyboard still works under the policy, the label choices are reachable
with Tab, the model panel is a live region, and the review page keeps the focus after a swap."""

from __future__ import annotations

import uuid

import pytest

from annotations import queue
from annotations.models import Membership, Review
from annotations.services import annotation_submit, project_set_overlap
from tests.test_browser import (  # noqa: F401 (fixtures)
    CURRENT,
    _pages,
    annotate_url,
    browser,
    current_ext_id,
    expect,
    labels_by_external_id,
    member,
    reviews,
    wait_until,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

# Collects every CSP violation the page reports, from the first byte on.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} ${e.sample || ""}`);
});
"""


@pytest.fixture
def csp_page(browser, live_server):  # noqa: F811
    yield from _pages(browser, live_server.url, init_script=WATCH_CSP)


def watch_console(page) -> list[str]:
    messages: list[str] = []
    page.on(
        "console",
        lambda msg: messages.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return messages


def assert_no_violation(page, console: list[str], where: str) -> None:
    page.wait_for_load_state("load")
    violations = page.evaluate("window.__csp")
    assert violations == [], f"{where}: {violations}"
    assert console == [], f"{where}: {console}"


def disputed(project, annotators, count: int) -> list[Review]:
    """`count` items on which the two annotators disagree: each goes to review."""
    a, b = annotators
    for _ in range(count):
        (item,) = queue.next_items(project=project, user=a, count=1)
        annotation_submit(item=item, annotator=a, labels=["positive"], client_uuid=uuid.uuid4())
        item = queue.next_items(project=project, user=b, count=1, exclude=frozenset())[0]
        annotation_submit(item=item, annotator=b, labels=["negative"], client_uuid=uuid.uuid4())
    return list(Review.objects.filter(item__project=project))


@pytest.fixture
def worked(reviews):  # noqa: F811
    """Two annotators disagree on two items; `root` is a site admin and the project's admin."""
    project = project_set_overlap(reviews, 2)
    annotators = [member(project, "annie"), member(project, "bo")]
    root = member(project, "root", Membership.Role.ADMIN)
    root.is_staff = root.is_superuser = True
    root.save(update_fields=["is_staff", "is_superuser"])
    assert len(disputed(project, annotators, 2)) == 2
    return project, root


def test_every_main_page_and_the_admin_load_without_a_csp_violation(csp_page, worked):
    project, root = worked
    page = csp_page(root)
    console = watch_console(page)
    paths = [
        "/projects/",
        f"/projects/{project.pk}/",
        f"/projects/{project.pk}/annotate/",
        f"/projects/{project.pk}/review/",
        f"/projects/{project.pk}/quality/",
        f"/projects/{project.pk}/settings/",
        f"/projects/{project.pk}/members/",
        f"/projects/{project.pk}/classes/",
        f"/projects/{project.pk}/assignments/",
        f"/projects/{project.pk}/import/",
        "/admin/",
        "/admin/annotations/project/",
        f"/admin/annotations/project/{project.pk}/change/",
    ]
    for path in paths:
        response = page.goto(path)
        assert response.ok, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert_no_violation(page, console, path)
    # Values once set by inline style attributes are applied by static/js/styles.js.
    page.goto(f"/projects/{project.pk}/quality/")
    cell = page.locator("td.heat-cell").first
    assert cell.evaluate("el => el.style.backgroundColor") != ""
    page.goto(f"/projects/{project.pk}/annotate/")
    colour = page.locator("label.choice").first.evaluate("el => el.style.getPropertyValue('--c')")
    assert colour == "#2f9e44"
    assert_no_violation(page, console, "after the checks")


def test_labelling_by_keyboard_works_under_the_csp(csp_page, reviews):  # noqa: F811
    annie = member(reviews, "annie")
    page = csp_page(annie, annotate_url(reviews))
    console = watch_console(page)
    expect(current_ext_id(page)).to_have_text("review-0")
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(current_ext_id(page)).to_have_text("review-1")
    wait_until(
        page, lambda: labels_by_external_id(reviews, annie) == {"review-0": ["negative"]}, "saved"
    )
    progress = page.locator("#progress .bar").evaluate("el => el.style.width")
    assert progress.endswith("%")
    assert_no_violation(page, console, "annotate")


def test_tab_reaches_the_label_choices_which_are_real_radio_buttons(csp_page, reviews):  # noqa: F811
    annie = member(reviews, "annie")
    page = csp_page(annie, annotate_url(reviews))
    expect(current_ext_id(page)).to_have_text("review-0")
    assert page.locator("[aria-pressed]").count() == 0
    focused = ""
    for _ in range(20):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "document.activeElement.closest('label.choice') ? document.activeElement.value : ''"
        )
        if focused:
            break
    assert focused == "positive", "Tab never reached the label choices"
    assert page.evaluate("document.activeElement.type") == "radio"
    page.keyboard.press("ArrowRight")  # the next radio button of the group: negative
    negative = page.locator('label.choice input[value="negative"]')
    expect(negative).to_be_focused()
    expect(negative).to_be_checked()
    expect(page.locator("label.choice.on")).to_have_count(1)
    page.keyboard.press("Enter")  # submits, also from a focused label
    expect(current_ext_id(page)).to_have_text("review-1")
    wait_until(
        page, lambda: labels_by_external_id(reviews, annie) == {"review-0": ["negative"]}, "saved"
    )
    expect(page.locator('label.choice input[value="negative"]')).not_to_be_checked()


def test_the_model_panel_is_a_polite_live_region(csp_page, reviews):  # noqa: F811
    page = csp_page(member(reviews, "annie"), annotate_url(reviews))
    expect(page.locator("#model")).to_have_attribute("aria-live", "polite")


def test_after_a_review_decision_the_focus_is_on_the_next_item_not_the_body(csp_page, worked):
    project, root = worked
    page = csp_page(root, f"/projects/{project.pk}/review/")
    first = page.locator("#review-main .review-card .ext-id").inner_text()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#review-main .review-card .ext-id")).not_to_have_text(first)
    expect(page.locator("#review-main article.review-card")).to_be_focused()
    # The keys still act on the new item: skip it with Space.
    page.keyboard.press("Space")
    expect(page.locator("#review-main .card.empty")).to_be_visible()
    expect(page.locator("#review-main article.card.empty")).to_be_focused()
    assert page.evaluate("document.activeElement !== document.body")


def test_a_key_pressed_before_the_swap_settles_still_acts_through_htmx(csp_page, worked):
    """htmx wires swapped-in forms when the swap settles; review.js wires them at once, so a fast
    reviewer's Space right after a decision skips in place instead of posting the bare form and
    reloading the page (the cause of a CI failure: the reload left the focus on the body)."""
    project, root = worked
    page = csp_page(root, f"/projects/{project.pk}/review/")
    # A slow settle (a busy machine) leaves a wide window between the swap and the wiring.
    page.evaluate("htmx.config.defaultSettleDelay = 3000; window.__samePage = true")
    first = page.locator("#review-main .review-card .ext-id").inner_text()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#review-main .review-card .ext-id")).not_to_have_text(first)
    page.keyboard.press("Space")
    expect(page.locator("#review-main article.card.empty")).to_be_focused()
    assert page.evaluate("window.__samePage === true"), "the skip reloaded the page"
