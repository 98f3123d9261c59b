"""Review in a real browser: three annotators disagree on an item, it appears in the review queue,
a reviewer resolves it with the keyboard, and the export holds the gold label."""

from __future__ import annotations

import json
import uuid

import pytest

from annotations.models import Membership, Review, ReviewEvent
from annotations.review import review_decide, review_flag
from annotations.services import project_set_overlap
from tests.conftest import submit_handed_out
from tests.test_browser import (  # noqa: F401 (fixtures)
    CURRENT,
    annotate_url,
    browser,
    current_ext_id,
    expect,
    labels_by_external_id,
    member,
    open_page,
    reviews,
    wait_until,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def label_first_item(open_page, project, user, key: str) -> None:  # noqa: F811
    page = open_page(user, annotate_url(project))
    expect(current_ext_id(page)).to_have_text("review-0")
    page.keyboard.press(key)
    page.keyboard.press("Enter")
    expect(page.locator(f"{CURRENT} .ext-id")).not_to_have_text("review-0")
    wait_until(page, lambda: "review-0" in labels_by_external_id(project, user), "saved")


def test_three_annotators_disagree_and_a_reviewer_resolves_it_by_keyboard(
    open_page,  # noqa: F811 (fixtures from tests.test_browser)
    reviews,  # noqa: F811
    tmp_path,
):
    project = project_set_overlap(reviews, 3)
    annotators = [member(project, name) for name in ("annie", "bo", "cy")]
    rita = member(project, "rita", Membership.Role.REVIEWER)
    # Each annotator gets review-0 first (the highest priority, then partly answered first),
    # and each says something else: positive (1), negative (2), neutral (its own key u).
    for user, key in zip(annotators, ["1", "2", "u"], strict=True):
        label_first_item(open_page, project, user, key)
    review = Review.objects.get(item__external_id="review-0")
    assert review.reasons == ["disagreement"]

    page = open_page(rita, f"/projects/{project.pk}/review/")
    card = page.locator("#review-main")
    expect(card.locator(".review-card .ext-id")).to_have_text("review-0")
    expect(card.locator(".tag-warn")).to_have_text("annotators disagree")
    expect(card.locator("li.candidate .candidate-who")).to_have_text(["annie", "bo", "cy"])
    expect(page.locator("#review-counts")).to_contain_text("1 waiting")

    page.keyboard.press("ArrowDown")  # annie's answer
    page.keyboard.press("ArrowDown")  # bo's: negative
    negative = page.locator("#decide-form label.choice").filter(
        has=page.locator('input[value="negative"]')
    )
    expect(negative).to_have_class("choice on")
    expect(card.locator("li.candidate.match .candidate-who")).to_have_text("bo")
    page.keyboard.press("/")
    page.keyboard.type("Ends on a complaint about support.")
    page.keyboard.press("Escape")
    page.screenshot(path=str(tmp_path / "review.png"))
    page.keyboard.press("Enter")

    expect(page.locator("#review-main .alert-ok")).to_contain_text("review-0 → negative")
    expect(page.locator("#review-main .card.empty")).to_contain_text("Nothing to review")
    expect(page.locator("#recent-decisions")).to_contain_text("review-0")
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED
    assert (review.labels, review.decided_by, review.comment) == (
        ["negative"],
        rita,
        "Ends on a complaint about support.",
    )
    event = ReviewEvent.objects.get(review=review, action="decide")
    assert event.chosen == "annotator:bo"
    assert [c["labels"] for c in event.candidates] == [["positive"], ["negative"], ["neutral"]]

    response = page.request.get(f"/projects/{project.pk}/export.jsonl")
    assert response.ok
    records = {r["external_id"]: r for r in map(json.loads, response.text().strip().splitlines())}
    assert records["review-0"]["gold"] == {
        "labels": ["negative"],
        "source": "adjudicated",
        "agreement": pytest.approx(1 / 3),
    }
    assert len(records["review-0"]["annotations"]) == 3


def test_the_quality_page_shows_the_heat_maps_and_flags_the_careless_annotator_to_admins(
    open_page,  # noqa: F811 (fixtures from tests.test_browser)
    reviews,  # noqa: F811
    tmp_path,
):
    """Four annotators label 12 reviews (three careful, one always a class off), a reviewer
    decides six of them; the project admin's quality page shows it at a glance."""
    project = project_set_overlap(reviews, 4)
    truth = ["positive", "negative", "neutral"]
    careful = [member(project, name) for name in ("annie", "bo", "cy")]
    careless = member(project, "dan")
    rita = member(project, "rita", Membership.Role.REVIEWER)
    boss = member(project, "boss", Membership.Role.ADMIN)
    items = list(project.items.order_by("id"))
    for index, item in enumerate(items):
        right = truth[index % 3]
        for n, user in enumerate(careful):
            # One careful slip each, on different items.
            label = truth[(index + 1) % 3] if index == 4 * n + 1 else right
            answer(item, user, label)
        answer(item, careless, truth[(index * 7 + 1) % 3])
    for index, item in enumerate(items[:6]):
        review = review_flag(item=item, user=rita)
        review_decide(
            project=project, review_id=review.pk, reviewer=rita, labels=[truth[index % 3]]
        )

    page = open_page(boss, f"/projects/{project.pk}/quality/")
    expect(page.locator("h1")).to_contain_text("Quality")
    kappa = page.locator("section.quality-maps table.heat").first
    expect(kappa.locator("td.heat-cell")).to_have_count(12)  # 4 × 4 without the diagonal
    below = page.locator(".quality-alert")
    expect(below).to_contain_text("dan")
    expect(below).not_to_contain_text("annie")
    expect(page.locator("tr.quality-below")).to_have_count(1)
    page.screenshot(path=str(tmp_path / "quality.png"), full_page=True)

    reviewer_page = open_page(rita, f"/projects/{project.pk}/quality/")
    expect(reviewer_page.locator("h1")).to_contain_text("Quality")
    expect(reviewer_page.locator(".quality-alert")).to_have_count(0)  # admins only


def answer(item, user, label: str) -> None:
    item.refresh_from_db()
    submit_handed_out(item=item, annotator=user, labels=[label], client_uuid=uuid.uuid4())
