"""A likely label error's flag follows its item through review, whichever route sent it: the
data browser's bulk action (page, API, `manage.py items_action`) moves it to "in review" as the
label-error panel does, a decision closes it, and reopening that decision opens it again."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotations import bulk
from annotations.bulk import Selection
from annotations.models import GoldLabel, Item, Review
from annotations.review import review_decide, review_flag, review_reopen
from curation.dataset_models import LabelIssue
from curation.label_issues import label_issue_dismiss
from tests.conftest import submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

Status = LabelIssue.Status


def flagged(project, annotator, n: int = 1) -> list[Item]:
    """`n` items answered "positive" whose gold label the analysis flagged (suggesting
    "negative"), as `curation.label_errors` writes them."""
    items = list(Item.objects.filter(project=project).order_by("pk")[:n])
    for item in items:
        submit_handed_out(
            item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4()
        )
        LabelIssue.objects.create(
            item=item,
            project=project,
            gold=["positive"],
            score=0.9,
            suggested="negative",
            probabilities={"positive": 0.1, "negative": 0.9},
            status=Status.FLAGGED,
            updated_at=timezone.now(),
        )
    return items


def status_of(item: Item) -> str:
    return LabelIssue.objects.values_list("status", flat=True).get(pk=item.pk)


def decide(project, item: Item, reviewer, label: str) -> Review:
    review = Review.objects.get(item=item)
    return review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=[label])


# --- Sent to review as a likely label error, by any route -------------------------------------


def test_the_bulk_action_with_reason_label_error_puts_the_flag_in_review_and_a_decision_closes_it(
    project, annotator, reviewer
):
    (item,) = flagged(project, annotator)
    bulk.items_send_to_review(
        project=project,
        user=reviewer,
        selection=Selection.of_ids([item.pk]),
        reason=Review.Reason.LABEL_ERROR,
    )
    assert status_of(item) == Status.IN_REVIEW
    decide(project, item, reviewer, "negative")
    assert status_of(item) == Status.FIXED


def test_other_reasons_leave_the_flag_as_it_is(project, annotator, reviewer):
    (item,) = flagged(project, annotator)
    bulk.items_send_to_review(
        project=project,
        user=reviewer,
        selection=Selection.of_ids([item.pk]),
        reason=Review.Reason.DUPLICATE,
    )
    assert status_of(item) == Status.FLAGGED


def test_the_api_and_the_command_send_flags_to_review_like_the_panel(project, annotator, reviewer):
    by_api, by_command = flagged(project, annotator, 2)
    client = APIClient()
    client.force_authenticate(reviewer)
    response = client.post(
        reverse("api-item-actions", args=[project.pk]),
        {"action": "review", "items": [by_api.pk], "reason": "label_error"},
        format="json",
    )
    assert response.status_code == 200, response.content
    call_command(
        "items_action",
        str(project.pk),
        "review",
        "--items",
        str(by_command.pk),
        "--reason",
        "label_error",
        "--yes",
        "--no-progress",
    )
    assert (status_of(by_api), status_of(by_command)) == (Status.IN_REVIEW, Status.IN_REVIEW)


def test_the_browsers_bar_sends_flags_to_review_with_the_label_error_reason(
    project, annotator, reviewer
):
    (item,) = flagged(project, annotator)
    client = Client()
    client.force_login(reviewer)
    response = client.post(
        reverse("items_bulk", args=[project.pk]),
        {"action": "review", "item": [item.pk], "reason": "label_error", "confirmed": "1"},
    )
    assert response.status_code in (200, 302), response.content
    assert status_of(item) == Status.IN_REVIEW


# --- Reopening the decision that closed a flag -----------------------------------------------


@pytest.mark.parametrize(("label", "closed"), [("negative", "fixed"), ("positive", "dismissed")])
def test_reopening_the_decision_puts_the_flag_back_in_review_about_the_answers_gold_label(
    project, annotator, reviewer, label, closed
):
    (item,) = flagged(project, annotator)
    review_flag(item=item, user=reviewer, reason=Review.Reason.LABEL_ERROR)
    review = decide(project, item, reviewer, label)
    assert status_of(item) == closed

    review_reopen(project=project, review_id=review.pk, user=reviewer)
    issue = LabelIssue.objects.get(pk=item.pk)
    assert (issue.status, issue.gold, issue.closed_by, issue.decision) == (
        Status.IN_REVIEW,
        ["positive"],  # the answers' gold label again, not the undone decision's
        None,
        None,
    )
    # The next decision closes it anew, judged against the answers' label.
    decide(project, item, reviewer, "positive")
    assert status_of(item) == Status.DISMISSED


def test_flagging_a_decided_item_again_reopens_the_flag_its_decision_closed(
    project, annotator, reviewer
):
    (item,) = flagged(project, annotator)
    review_flag(item=item, user=reviewer, reason=Review.Reason.LABEL_ERROR)
    decide(project, item, reviewer, "negative")
    bulk.items_send_to_review(project=project, user=reviewer, selection=Selection.of_ids([item.pk]))
    assert status_of(item) == Status.IN_REVIEW
    assert GoldLabel.objects.get(item=item).labels == ["positive"]


def test_a_flag_dismissed_on_the_panel_stays_closed_when_a_decision_is_reopened(
    project, annotator, reviewer
):
    (item,) = flagged(project, annotator)
    review = review_flag(item=item, user=reviewer)  # a plain flag: the issue stays flagged
    label_issue_dismiss(item=item, user=reviewer)
    decide(project, item, reviewer, "positive")
    review_reopen(project=project, review_id=review.pk, user=reviewer)
    assert status_of(item) == Status.DISMISSED
