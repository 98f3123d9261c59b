"""Sending items to review in batches, and the end of a relabelling round.

`review.review_flag` (one item) and the bulk action (`bulk.items_send_to_review`, thousands of
items a chunk at a time) share `reviews_open`, which keeps the items' likely-label-error flags
in step (`curation.label_issues`: light services on those rows, no training machinery). This
module imports neither `services` nor `review`, so `services.annotation_submit` can call
`relabel_arrived` on the submission that brings an item's new answers in.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from annotations.gold import gold_refresh
from annotations.models import ItemRelabel, Project, Review, ReviewEvent
from curation.label_issues import label_issues_in_review, label_issues_reopen
from curation.training_requests import request_training_on_commit

RELABEL_NOTE = "The new answers are in after relabelling."


def reviews_open(
    *,
    project: Project,
    item_ids: Sequence[int],
    user_id: int | None,
    note: str = "",
    reason: str = Review.Reason.FLAG,
) -> list[Review]:
    """Send these items of `project` to review, as `review_flag` does one: a review is opened
    (or reopened, with `reason` added to its reasons) and a flag event logged for each; a decided
    item's gold label is derived from its answers again and the event keeps the decision it
    undid. `user_id` None: an analysis sent them. The caller holds the items' row locks, in one
    transaction; a few queries however many items (bulk inserts and one bulk update)."""
    ids = sorted(set(item_ids))
    if not ids:
        return []
    note = (note or "").strip()
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        existing = {r.item_id: r for r in Review.objects.filter(item_id__in=ids)}
        undone: dict[int, list[str] | None] = {}
        for review in existing.values():
            if review.status == Review.Status.DECIDED:
                undone[review.item_id] = review.labels
            if reason not in review.reasons:
                review.reasons = [*review.reasons, reason]
            review.flagged_by_id = user_id
            review.flag_note = note
            review.status = Review.Status.OPEN
            review.labels = None
            review.decided_by = None
            review.decided_at = None
            review.comment = ""
            review.updated_at = now  # bulk_update does not apply auto_now
        Review.objects.bulk_update(
            list(existing.values()),
            [
                "reasons",
                "flagged_by",
                "flag_note",
                "status",
                "labels",
                "decided_by",
                "decided_at",
                "comment",
                "updated_at",
            ],
            batch_size=1000,
        )
        created = Review.objects.bulk_create(
            [
                Review(
                    project=project,
                    item_id=item_id,
                    reasons=[reason],
                    flagged_by_id=user_id,
                    flag_note=note,
                )
                for item_id in ids
                if item_id not in existing
            ],
            batch_size=1000,
        )
        reviews = [*existing.values(), *created]
        if undone:
            gold_refresh(project, list(undone))
            label_issues_reopen(list(undone))  # flags those decisions closed
            request_training_on_commit(project.pk)
        if reason == Review.Reason.LABEL_ERROR:
            # The same move as the label-error panel's "send to review", whichever route.
            label_issues_in_review(ids)
        ReviewEvent.objects.bulk_create(
            [
                ReviewEvent(
                    review=review,
                    actor_id=user_id,
                    action=ReviewEvent.Action.FLAG,
                    comment=note,
                    labels=undone.get(review.item_id),
                )
                for review in reviews
            ],
            batch_size=1000,
        )
    return sorted(reviews, key=lambda r: r.item_id)


def relabel_arrived(project: Project, item_id: int) -> bool:
    """The (locked) item just got the new answers it was sent back for: close its pending
    relabelling and send it to review ("relabelled"), flagged by who asked for it. False when
    no relabelling was pending (the item was complete again for another reason)."""
    pending = list(
        ItemRelabel.objects.filter(item_id=item_id, completed_at__isnull=True).order_by(
            "created_at", "id"
        )
    )
    if not pending:
        return False
    ItemRelabel.objects.filter(pk__in=[r.pk for r in pending]).update(completed_at=timezone.now())
    reviews_open(
        project=project,
        item_ids=[item_id],
        user_id=pending[-1].requested_by_id,
        note=RELABEL_NOTE,
        reason=Review.Reason.RELABEL,
    )
    return True
