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

Sending a flagged item to review for the reason "likely label error" by any route (this
module's top-N, or the data browser's bulk action through `annotations.flags.reviews_open`)
moves its flag to IN_REVIEW (`label_issues_in_review`); reopening the decision that closed a
flag (`annotations.review.review_reopen`, or flagging the decided item again) moves it back to
IN_REVIEW (`label_issues_reopen`), about the gold label derived from the answers again.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import F, JSONField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotations.models import GoldLabel, Item, Project, Review, ReviewEvent
from curation.dataset_models import LabelIssue

__all__ = [
    "OPEN_STATUSES",
    "label_errors_to_review",
    "label_issue_close",
    "label_issue_dismiss",
    "label_issues_for",
    "label_issues_in_review",
    "label_issues_reopen",
]

Status = LabelIssue.Status
#: Flags a reviewer's decision closes.
OPEN_STATUSES = (Status.FLAGGED, Status.IN_REVIEW)
CLOSED_STATUSES = (Status.FIXED, Status.DISMISSED)
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
            if not label_issues_in_review([item_id]):  # closed or sent meanwhile
                continue
            review_flag(item=items[item_id], user=user, note=text, reason=Review.Reason.LABEL_ERROR)
        sent.append(item_id)
    return sent


def label_issues_in_review(item_ids: Sequence[int]) -> int:
    """These items were sent to review as likely label errors: their FLAGGED flags go
    IN_REVIEW, so the reviewer's decision closes them. Returns how many moved (flags closed,
    unscored or already in review stay as they are). One query; inside the caller's
    transaction."""
    return LabelIssue.objects.filter(pk__in=list(item_ids), status=Status.FLAGGED).update(
        status=Status.IN_REVIEW, updated_at=timezone.now()
    )


def label_issues_reopen(item_ids: Sequence[int]) -> int:
    """The decisions on these items were undone: a flag a decision closed is IN_REVIEW again,
    about the item's gold label as derived from its answers again (call after
    `gold_refresh`; kept as it was when there is none), so the next decision closes it anew
    as FIXED or DISMISSED. A flag closed otherwise ("label is right" on the panel) stays
    closed. Returns how many reopened; one query."""
    gold = GoldLabel.objects.filter(item_id=OuterRef("pk"), labels__isnull=False).values("labels")
    return LabelIssue.objects.filter(
        pk__in=list(item_ids), status__in=CLOSED_STATUSES, decision__isnull=False
    ).update(
        status=Status.IN_REVIEW,
        gold=Coalesce(Subquery(gold, output_field=JSONField()), F("gold")),
        decision=None,
        closed_by=None,
        closed_at=None,
        updated_at=timezone.now(),
    )


def label_issue_close(
    *, item_id: int, labels: Sequence[str] | None, user, decision: ReviewEvent | None = None
) -> str | None:
    """A reviewer decided `item_id` as `labels` (the `decision` event): close its open flag,
    FIXED when the decision differs from the flagged gold label, else DISMISSED ("the label is
    right"); either way it remembers the decided label and the decision, which
    `label_issues_reopen` undoes. Returns the new status (None: no open flag). Called by
    `annotations.review.review_decide` inside its transaction."""
    issue = LabelIssue.objects.select_for_update().filter(pk=item_id).first()
    if issue is None or issue.status not in OPEN_STATUSES:
        return None
    decided = sorted(labels or [])
    issue.status = Status.DISMISSED if decided == sorted(issue.gold or []) else Status.FIXED
    issue.gold = list(labels or [])
    issue.closed_by = user
    issue.decision = decision
    issue.closed_at = issue.updated_at = timezone.now()
    issue.save(update_fields=["status", "gold", "closed_by", "decision", "closed_at", "updated_at"])
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
        issue.decision = None  # closed here, not by a decision a reopening would undo
        issue.closed_at = issue.updated_at = now
        issue.save(
            update_fields=["status", "gold", "closed_by", "decision", "closed_at", "updated_at"]
        )
    return issue
