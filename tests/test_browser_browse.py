"""The data browser in a real browser, on the real ASGI server: a reviewer filters the data to
likely label errors, sends them all to review through the bulk bar (the count shown before
confirming), fixes one on the review page by keyboard, and its label-error flag closes."""

from __future__ import annotations

import re
import uuid

import pytest
from django.utils import timezone

from annotations.models import GoldLabel, ItemAction, Membership, Review
from curation.dataset_models import LabelIssue
from tests.conftest import submit_handed_out
from tests.test_browser import (  # noqa: F401 (fixtures)
    asgi_server,
    browser,
    expect,
    member,
    open_asgi_page,
    reviews,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]

CLASSES = ["positive", "negative", "neutral"]
#: External ids the label-error analysis flagged: their gold label, and what it suggests.
FLAGGED = {"review-1": ("positive", "negative"), "review-4": ("neutral", "negative")}
FLAGGED["review-8"] = ("negative", "positive")


def labelled_with_flags(project):
    """Every item answered once (a gold label each); three flagged as likely label errors and
    one scored but not flagged, as the label-error analysis leaves them."""
    annie = member(project, "annie")
    now = timezone.now()
    for index, item in enumerate(project.items.order_by("id")):
        gold, suggested = FLAGGED.get(item.external_id, (CLASSES[index % 3], ""))
        submit_handed_out(item=item, annotator=annie, labels=[gold], client_uuid=uuid.uuid4())
        if item.external_id in FLAGGED or item.external_id == "review-2":
            flagged = item.external_id in FLAGGED
            LabelIssue.objects.create(
                item=item,
                project=project,
                gold=[gold],
                score=0.93 if flagged else 0.1,
                suggested=suggested or gold,
                probabilities={suggested or gold: 0.8, gold: 0.15} if flagged else {gold: 0.9},
                status=LabelIssue.Status.FLAGGED if flagged else LabelIssue.Status.NONE,
                updated_at=now,
            )
    assert GoldLabel.objects.filter(project=project, labels__isnull=False).count() == 12


def test_a_reviewer_filters_to_likely_label_errors_sends_them_to_review_and_fixes_one(
    open_asgi_page,  # noqa: F811 (fixtures from tests.test_browser)
    reviews,  # noqa: F811
    tmp_path,
):
    project = reviews
    labelled_with_flags(project)
    rita = member(project, "rita", Membership.Role.REVIEWER)

    page = open_asgi_page(rita, f"/projects/{project.pk}/data/")
    expect(page.locator("#browse-count")).to_contain_text("12 items match")
    filters = page.locator("#browse-filters")
    filters.locator('select[name="flag"]').select_option("flagged")
    filters.locator('select[name="sort"]').select_option("-error")
    filters.locator('button[type="submit"]').click()
    expect(page.locator("#browse-count")).to_contain_text("3 items match")
    expect(page.locator("#browse-table tbody .ext-id")).to_have_count(3)
    assert "flag=flagged" in page.url  # the view is in the URL, to share or bookmark
    shown = set(page.locator("#browse-table tbody .ext-id").all_inner_texts())
    assert shown == set(FLAGGED)

    # Everything the filter matches, sent to review as likely label errors: the bar says how
    # many before anything changes.
    page.locator("#all-matching").check()
    page.locator("#bulk-action").select_option("review")
    page.locator("#bulk-reason").select_option("label_error")
    page.locator("#bulk-actions button", has_text="Apply").click()
    confirm = page.locator("#bulk-confirm")
    expect(confirm).to_contain_text("3 items will be sent to review")
    assert not Review.objects.filter(project=project).exists()
    page.screenshot(path=str(tmp_path / "bulk-confirm.png"), full_page=True)
    confirm.locator("button.primary").click()
    expect(page.locator("body")).to_contain_text("Sent 3 item(s) to review")
    sent = Review.objects.filter(project=project, status=Review.Status.OPEN)
    assert {r.item.external_id for r in sent} == set(FLAGGED)
    assert all(r.reasons == [Review.Reason.LABEL_ERROR] for r in sent)
    action = ItemAction.objects.get(project=project)
    assert (action.user, action.action, action.item_count) == (rita, ItemAction.Kind.REVIEW, 3)

    # The review page: the first item sent, with the reason and the model's suggestion; the
    # reviewer takes the suggested label with its key and decides with Enter.
    review_page = open_asgi_page(rita, f"/projects/{project.pk}/review/")
    card = review_page.locator("#review-main")
    ext_id = card.locator(".review-card .ext-id")
    expect(ext_id).to_have_text(re.compile(r"^review-[148]$"))  # one of the three
    first = ext_id.inner_text()
    gold, suggested = FLAGGED[first]
    expect(review_page.locator("section.label-issue")).to_contain_text("Likely label error")
    expect(review_page.locator("section.label-issue .chip-suggested")).to_have_text(suggested)
    key = str(CLASSES.index(suggested) + 1)  # positive 1, negative 2 (neutral has its own key)
    review_page.keyboard.press(key)
    chosen = review_page.locator("#decide-form label.choice").filter(
        has=review_page.locator(f'input[value="{suggested}"]')
    )
    expect(chosen).to_have_class("choice on")
    review_page.keyboard.press("Enter")
    expect(review_page.locator("#review-main .alert-ok")).to_contain_text(f"{first} → {suggested}")

    issue = LabelIssue.objects.get(item__external_id=first)
    assert (issue.status, issue.gold, issue.closed_by) == (
        LabelIssue.Status.FIXED,
        [suggested],
        rita,
    )
    assert GoldLabel.objects.get(item__external_id=first).labels == [suggested]
    others = LabelIssue.objects.filter(item__external_id__in=set(FLAGGED) - {first})
    assert {i.status for i in others} <= {LabelIssue.Status.FLAGGED, LabelIssue.Status.IN_REVIEW}
    assert LabelIssue.objects.get(item__external_id="review-2").status == ""

    # Back in the browser, the fixed item is listed under its flag's new state.
    page.goto(f"/projects/{project.pk}/data/?flag=fixed")
    expect(page.locator("#browse-table tbody .ext-id")).to_have_text([first])


def test_an_analysis_run_from_the_page_shows_its_progress_live_until_done(
    open_asgi_page,  # noqa: F811 (fixtures from tests.test_browser)
    reviews,  # noqa: F811
):
    """ "Run now" queues the run (an htmx swap shows it queued); the worker's progress then
    reaches the row over the project's websocket, without a reload, until it is done."""
    project = reviews
    rita = member(project, "rita", Membership.Role.REVIEWER)
    page = open_asgi_page(rita, f"/projects/{project.pk}/data/analyses/")
    page.wait_for_function(
        "() => window.__sockets.some((ws) => ws.readyState === WebSocket.OPEN)", timeout=15_000
    )
    page.evaluate(
        """() => { window.__notReloaded = true; window.__events = [];
        for (const ws of window.__sockets) ws.addEventListener('message',
          (ev) => window.__events.push(JSON.parse(ev.data))); }"""
    )
    row = page.locator('[data-analysis-kind="outliers"]')
    expect(row.locator("[data-analysis-status]")).to_contain_text("never run")
    row.get_by_role("button", name="Run now").click()
    expect(page.locator("#analysis-runs .notice")).to_be_visible()
    expect(row.locator("[data-analysis-status]")).to_have_text("Done", timeout=15_000)
    expect(row.get_by_role("button", name="Run now")).to_be_enabled()
    assert row.locator("[data-analysis-progress]").evaluate("(bar) => bar.value") == 1
    events = page.evaluate("window.__events")
    done = [e for e in events if e.get("type") == "analysis" and e.get("status") == "done"]
    assert done and done[-1]["kind"] == "outliers", events  # it came over the socket
    assert page.evaluate("window.__notReloaded") is True
