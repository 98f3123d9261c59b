"""What people do with likely label errors: send the worst to review, dismiss one as "the label
is right", and close a flag when a reviewer decides its item.

The flags themselves (`LabelIssue` rows) are written by the label-error analysis
(`curation.label_errors`, in the training worker). This module is light (no numpy): the pages,
the API and `annotations.review` call it.

A flag's lifecycle: "" (scored, not flagged) or FLAGGED (cleanlab's decision) → IN_REVIEW (sent
to review) → FIXED (the reviewer chose another label) or DISMISSED (the label is right). A
closed flag keeps the gold label it was closed with in `gold`, and the next analysis run leaves
it closed while the item's gold label is that one: a dismissed flag is not raised again for the
same gold label, nor is a reviewer's fix flagged against their own decision.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotations.models import GoldLabel, Item, Project, Review
from curation.dataset_models import LabelIssue

__all__ = [
    "OPEN_STATUSES",
    "label_errors_to_review",
    "label_issue_close",
    "label_issue_dismiss",
    "label_issues_for",
]

Status = LabelIssue.Status
#: Flags a reviewer's decision closes.
OPEN_STATUSES = (Status.FLAGGED, Status.IN_REVIEW)
#: How many flags one request may send to review.
MAX_TO_REVIEW = 5000


def label_issues_for(
    project: Project, *, min_score: float | None = None, status: str | None = None
) -> QuerySet[LabelIssue]:
    """The project's label-error rows, most likely wrong first (the API's list)."""
    rows = LabelIssue.objects.filter(project=project).select_related("item")
    if min_score is not None:
        rows = rows.filter(score__gte=min_score)
    if status is not None:
        rows = rows.filter(status=status)
    return rows.order_by("-score", "item_id")


def label_errors_to_review(
    *,
    project: Project,
    user,
    limit: int | None = None,
    item_ids: Sequence[int] | None = None,
    note: str = "",
) -> list[int]:
    """Send flagged items to review with the reason "likely label error" and mark their flags
    IN_REVIEW: the `limit` most likely wrong (highest score first), or those of `item_ids`
    that are flagged. Returns the item ids sent, in that order."""
    from annotations.review import review_flag  # annotations.review imports this module

    if limit is None and item_ids is None:
        raise ValueError("say how many flags to send (limit) or which items (item_ids)")
    if limit is not None and not 1 <= int(limit) <= MAX_TO_REVIEW:
        raise ValueError(f"limit must be between 1 and {MAX_TO_REVIEW}, got {limit}")
    rows = LabelIssue.objects.filter(project=project, status=Status.FLAGGED)
    if item_ids is not None:
        rows = rows.filter(item_id__in=list(item_ids)[:MAX_TO_REVIEW])
    ranked = rows.order_by("-score", "item_id").values_list("item_id", flat=True)
    ids = list(ranked[:limit] if limit else ranked)
    items = {item.pk: item for item in Item.objects.filter(pk__in=ids).select_related("project")}
    issues = LabelIssue.objects.in_bulk(ids)
    sent = []
    for item_id in ids:
        issue = issues[item_id]
        text = note or (
            f"Likely label error (score {issue.score:.2f}): the model suggests "
            f"{issue.suggested or 'another label'}."
        )
        with transaction.atomic():
            updated = LabelIssue.objects.filter(pk=item_id, status=Status.FLAGGED).update(
                status=Status.IN_REVIEW, updated_at=timezone.now()
            )
            if not updated:  # closed or sent meanwhile
                continue
            review_flag(item=items[item_id], user=user, note=text, reason=Review.Reason.LABEL_ERROR)
        sent.append(item_id)
    return sent


def label_issue_close(*, item_id: int, labels: Sequence[str] | None, user) -> str | None:
    """A reviewer decided `item_id` as `labels`: close its open flag, FIXED when the decision
    differs from the flagged gold label, else DISMISSED ("the label is right"); either way it
    remembers the decided label. Returns the new status (None: no open flag). Called by
    `annotations.review.review_decide` inside its transaction."""
    issue = LabelIssue.objects.select_for_update().filter(pk=item_id).first()
    if issue is None or issue.status not in OPEN_STATUSES:
        return None
    decided = sorted(labels or [])
    issue.status = Status.DISMISSED if decided == sorted(issue.gold or []) else Status.FIXED
    issue.gold = list(labels or [])
    issue.closed_by = user
    issue.closed_at = issue.updated_at = timezone.now()
    issue.save(update_fields=["status", "gold", "closed_by", "closed_at", "updated_at"])
    return issue.status


def label_issue_dismiss(*, item: Item, user) -> LabelIssue:
    """Mark `item`'s flag "label is right" for its current gold label, so no later run raises
    it again while the gold label stays the same. Raises ValueError when the item has no
    label-error score or no gold label."""
    with transaction.atomic():
        issue = LabelIssue.objects.select_for_update().filter(pk=item.pk).first()
        if issue is None:
            raise ValueError(f"{item.external_id} has no label-error score to dismiss.")
        gold = GoldLabel.objects.filter(item_id=item.pk).values_list("labels", flat=True).first()
        if gold is None:
            raise ValueError(f"{item.external_id} has no gold label to confirm.")
        now = timezone.now()
        issue.status = Status.DISMISSED
        issue.gold = list(gold)
        issue.closed_by = user
        issue.closed_at = issue.updated_at = now
        issue.save(update_fields=["status", "gold", "closed_by", "closed_at", "updated_at"])
    return issue
