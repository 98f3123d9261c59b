"""Sending items to review in batches, and the end of a relabelling round (answered, or
withdrawn by a reviewer's decision).

`review.review_flag` (one item) and the bulk action (`bulk.items_send_to_review`, thousands of
items a chunk at a time) share `reviews_open`, which keeps the items' likely-label-error flags
in step (`curation.label_issues`: light services on those rows, no training machinery). This
module imports neither `services` nor `review`, so `services.annotation_submit` can call
`relabel_arrived` on the submission that brings an item's new answers in.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotations.events import publish_progress_on_commit
from annotations.gold import gold_refresh
from annotations.models import Item, ItemRelabel, Project, Review, ReviewEvent
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


def relabels_complete(project: Project, item_ids: Sequence[int]) -> list[int]:
    """These (locked) items have the answers they were sent back for: a submission brought
    the last one, or a recount found them complete (a lowered overlap). Their pending
    relabellings end ("answered") and they go to review ("relabelled"), flagged by who asked
    for it. Returns the ids of the items that had one pending (the others were complete again
    for another reason)."""
    pending = list(
        ItemRelabel.objects.filter(item_id__in=list(item_ids), completed_at__isnull=True)
        .order_by("created_at", "id")
        .values_list("pk", "item_id", "requested_by_id")
    )
    if not pending:
        return []
    ItemRelabel.objects.filter(pk__in=[pk for pk, _, _ in pending]).update(
        completed_at=timezone.now(), outcome=ItemRelabel.Outcome.ANSWERED
    )
    requester = {item_id: user_id for _, item_id, user_id in pending}  # the latest request's
    by_user: dict[int | None, list[int]] = {}
    for item_id, user_id in requester.items():
        by_user.setdefault(user_id, []).append(item_id)
    for user_id, ids in by_user.items():
        reviews_open(
            project=project,
            item_ids=ids,
            user_id=user_id,
            note=RELABEL_NOTE,
            reason=Review.Reason.RELABEL,
        )
    return sorted(requester)


def relabel_arrived(project: Project, item_id: int) -> bool:
    """`relabels_complete` for the one item a submission just completed."""
    return bool(relabels_complete(project, [item_id]))


def relabel_withdraw(project: Project, item_id: int) -> bool:
    """A reviewer decided the (locked) item while it waited for new answers: the decision is
    what the relabelling was for, so its pending relabellings end ("decided") and the item
    stops asking for them: it wants the answers it has, or the project's overlap if it has
    fewer, and the project's progress follows in the same transaction. Without this, the new
    answers arriving later would reopen the decision. False when none was pending."""
    ended = ItemRelabel.objects.filter(item_id=item_id, completed_at__isnull=True).update(
        completed_at=timezone.now(), outcome=ItemRelabel.Outcome.DECIDED
    )
    if not ended:
        return False
    overlap = Project.objects.values_list("overlap", flat=True).get(pk=project.pk)
    count, was_open, required = Item.objects.values_list(
        "annotation_count", "needs_annotation", "required_answers"
    ).get(pk=item_id)
    base = required or overlap
    now_open = count < base
    Item.objects.filter(pk=item_id).update(
        relabel_answers=max(0, count - base), needs_annotation=now_open
    )
    if was_open != now_open:
        Project.objects.filter(pk=project.pk).update(
            complete_count=F("complete_count") + (1 if was_open else -1)
        )
    publish_progress_on_commit(project.pk, item_id)
    return True
