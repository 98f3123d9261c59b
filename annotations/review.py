"""The review queue: items whose answers disagree, that the model confidently disputes, or that
someone flagged, and the reviewers' decisions on them.

A reviewer *claims* one item at a time, for `settings.LEASE_SECONDS` renewed while their page is
open, so two reviewers never hold the same item. Claims and decisions lock the review row
(FOR UPDATE, SKIP LOCKED when claiming), so a second decision on a decided item is refused with
who decided it and when, never silently written over. Every flag, decision and reopening is
logged as a `ReviewEvent` with the answers the reviewer saw.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotations.events import publish_progress_on_commit
from annotations.flags import relabel_withdraw, reviews_open
from annotations.gold import gold_refresh
from annotations.label_classes import class_names_locked
from annotations.models import Annotation, Item, ItemRelabel, Project, Review, ReviewEvent
from annotations.services import validate_labels
from annotations.webhooks.events import review_decided_data, webhook_event
from annotations.webhooks.models import WebhookEvent
from curation.label_issues import label_issue_close, label_issues_reopen
from curation.training_requests import request_training_on_commit

NEW = "new"
MODEL = "model"


class ReviewConflict(Exception):
    """The review changed hands or was decided meanwhile; the message says by whom."""


@dataclass(frozen=True)
class Candidate:
    """One answer the reviewer can accept: an annotator's, or the model's."""

    source: str  # "annotator:<username>" or "model"
    who: str
    labels: list[str]
    confidence: float | None = None
    # An answer given before the item was last sent back for relabelling (`bulk.items_relabel`).
    earlier: bool = False

    def as_dict(self) -> dict:
        out = {
            "source": self.source,
            "who": self.who,
            "labels": self.labels,
            "confidence": self.confidence,
        }
        if self.earlier:  # only relabelled items' events carry the mark
            out["earlier"] = True
        return out


def _username(user) -> str:
    return getattr(user, get_user_model().USERNAME_FIELD)


def review_candidates(review: Review, *, model: dict | None = None) -> list[Candidate]:
    """The item's non-skipped answers, oldest first, then the model's guess (`model`, from
    `curation.suggest.predictions_for`, or the prediction stored when the model flagged it)."""
    username = f"annotator__{get_user_model().USERNAME_FIELD}"
    # A relabelled item: the answers it had when it was last sent back come first, marked.
    earlier = set(
        ItemRelabel.objects.filter(item_id=review.item_id)
        .order_by("-created_at", "-id")
        .values_list("previous", flat=True)
        .first()
        or ()
    )
    rows = (
        Annotation.objects.filter(item_id=review.item_id, skipped=False)
        .order_by("created_at", "id")
        .values_list("id", username, "labels")
    )
    out = [
        Candidate(f"annotator:{who}", who, labels, earlier=pk in earlier)
        for pk, who, labels in sorted(rows, key=lambda row: row[0] not in earlier)
    ]
    if review.model_labels:
        out.append(Candidate(MODEL, "model", review.model_labels, review.model_confidence))
    elif model:
        out.append(Candidate(MODEL, "model", model["labels"], model["p"]))
    return out


def _claim_expiry(now=None):
    return (now or timezone.now()) + timedelta(seconds=settings.LEASE_SECONDS)


def review_next(*, project: Project, reviewer, exclude: Collection[int] = ()) -> Review | None:
    """The open review `reviewer` should work on, claimed for them: the one they hold already,
    else the oldest open review no one holds, those of items they answered themselves last.
    None when the queue is empty (for them)."""
    now = timezone.now()
    with transaction.atomic():
        mine = (
            Review.objects.filter(
                project=project,
                status=Review.Status.OPEN,
                claimed_by=reviewer,
                claimed_until__gt=now,
            )
            .exclude(pk__in=exclude)
            .order_by("created_at", "id")
            .first()
        )
        if mine is not None:
            Review.objects.filter(pk=mine.pk).update(claimed_until=_claim_expiry(now))
            return mine
        free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now) | Q(claimed_by=reviewer)
        # Items the reviewer answered themselves come last: a second pair of eyes first.
        answered = Annotation.objects.filter(item_id=OuterRef("item_id"), annotator=reviewer)
        candidates = (
            Review.objects.filter(project=project, status=Review.Status.OPEN)
            .filter(free)
            .exclude(pk__in=exclude)
            .order_by(Exists(answered).asc(), "created_at", "id")
        )
        if connection.features.has_select_for_update_skip_locked:
            # PostgreSQL re-checks the WHERE clause on a row another transaction claimed while we
            # waited to lock it, and SKIP LOCKED passes over rows being claimed right now.
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        review = candidates.first()
        if review is None:
            return None
        review.claimed_by = reviewer
        review.claimed_until = _claim_expiry(now)
        review.save(update_fields=["claimed_by", "claimed_until", "updated_at"])
    return review


def review_renew(*, project: Project, reviewer) -> int:
    """Keep the reviewer's claims alive while their page is open."""
    now = timezone.now()
    return Review.objects.filter(
        project=project, status=Review.Status.OPEN, claimed_by=reviewer, claimed_until__gt=now
    ).update(claimed_until=_claim_expiry(now))


def review_release(*, review: Review, reviewer) -> None:
    """Give a claimed review back to the queue (the reviewer skipped it)."""
    Review.objects.filter(pk=review.pk, claimed_by=reviewer).update(
        claimed_by=None, claimed_until=None
    )


def _locked(project: Project, review_id: int) -> Review:
    # No select_related: when the row was locked by a concurrent decision, PostgreSQL re-reads
    # only the locked row, so joined users would be those of the old row (none): the conflict
    # message would not name the reviewer who decided. The users load by id, when needed.
    review = Review.objects.select_for_update().filter(project=project, pk=review_id).first()
    if review is None:
        raise Review.DoesNotExist("No such review in this project.")
    return review


def _held_by_other(review: Review, user) -> bool:
    return (
        review.claimed_by_id is not None
        and review.claimed_by_id != user.pk
        and review.claimed_until is not None
        and review.claimed_until > timezone.now()
    )


def review_decide(
    *,
    project: Project,
    review_id: int,
    reviewer,
    labels: Sequence[str],
    comment: str = "",
    client_uuid: uuid.UUID | None = None,
    model: dict | None = None,
    label_names: Sequence[str] | None = None,
) -> Review:
    """Decide an item's gold label: one of the candidates' labels or a new one.

    Idempotent per `client_uuid` (a resent decision returns the review as decided). Refused with
    `ReviewConflict` when the item is already decided or another reviewer holds it.
    """
    labels = validate_labels(project, list(labels), skipped=False, names=label_names)
    comment = (comment or "").strip()
    with transaction.atomic():
        # The write lock before any row (`annotations.locks`); see `annotation_submit`.
        label_names = class_names_locked(project, write_lock=True)
        labels = validate_labels(project, labels, skipped=False, names=label_names)
        # The item's row before its review's, the order of a submission (which refreshes the
        # review): the decision may end a relabelling, which writes the item.
        Item.objects.select_for_update(of=("self",)).filter(
            project=project, review__pk=review_id
        ).values_list("pk", flat=True).first()
        review = _locked(project, review_id)
        if client_uuid is not None:
            done = ReviewEvent.objects.filter(client_uuid=client_uuid).first()
            if done is not None:
                if done.review_id != review.pk or done.action != ReviewEvent.Action.DECIDE:
                    raise ValidationError({"client_uuid": "This decision id was already used."})
                return review
        if review.status == Review.Status.DECIDED:
            who = _username(review.decided_by) if review.decided_by else "a reviewer"
            when = timezone.localtime(review.decided_at)
            raise ReviewConflict(
                f"Already decided by {who} at {when:%Y-%m-%d %H:%M:%S}: "
                f"{', '.join(review.labels or []) or 'no label'}. Reopen it to change the decision."
            )
        if _held_by_other(review, reviewer):
            raise ReviewConflict(
                f"{_username(review.claimed_by)} is reviewing this item; it is theirs until "
                f"they decide or leave it."
            )
        candidates = review_candidates(review, model=model)
        chosen = [c.source for c in candidates if sorted(c.labels) == sorted(labels)]
        now = timezone.now()
        review.status = Review.Status.DECIDED
        review.labels = labels
        review.decided_by = reviewer
        review.decided_at = now
        review.comment = comment
        review.claimed_by = None
        review.claimed_until = None
        review.save(
            update_fields=[
                "status",
                "labels",
                "decided_by",
                "decided_at",
                "comment",
                "claimed_by",
                "claimed_until",
                "updated_at",
            ]
        )
        decision = ReviewEvent.objects.create(
            review=review,
            actor=reviewer,
            action=ReviewEvent.Action.DECIDE,
            labels=labels,
            chosen=",".join(chosen)[:160] or NEW,
            candidates=[c.as_dict() for c in candidates],
            comment=comment,
            client_uuid=client_uuid,
        )
        # An item still waiting for new answers stops waiting: this decision settles it.
        relabel_withdraw(project, review.item_id)
        gold_refresh(project, [review.item_id], classes=label_names)
        # A likely label error this decision settles: fixed, or the label was right.
        label_issue_close(item_id=review.item_id, labels=labels, user=reviewer, decision=decision)
        webhook_event(
            project, WebhookEvent.REVIEW_DECIDED, lambda: review_decided_data(review, reviewer)
        )
        publish_progress_on_commit(project.pk, review.item_id)
        request_training_on_commit(project.pk)
    return review


def review_reopen(*, project: Project, review_id: int, user, comment: str = "") -> Review:
    """Undo a decision: the item goes back to the review queue and its gold label is derived
    from the answers again. Recorded with the decision it undid."""
    with transaction.atomic():
        review = _locked(project, review_id)
        if review.status != Review.Status.DECIDED:
            raise ReviewConflict("This item is not decided; there is nothing to reopen.")
        ReviewEvent.objects.create(
            review=review,
            actor=user,
            action=ReviewEvent.Action.REOPEN,
            labels=review.labels,
            comment=(comment or "").strip(),
        )
        review.status = Review.Status.OPEN
        review.labels = None
        review.decided_by = None
        review.decided_at = None
        review.comment = ""
        review.save(
            update_fields=["status", "labels", "decided_by", "decided_at", "comment", "updated_at"]
        )
        gold_refresh(project, [review.item_id])
        # A likely label error the decision closed is in review again.
        label_issues_reopen([review.item_id])
        request_training_on_commit(project.pk)
    return review


def review_flag(*, item: Item, user, note: str = "", reason: str = Review.Reason.FLAG) -> Review:
    """Send an item to review by hand (`reason`: why, as the reviewer page shows it; `user` is
    None when an analysis sends it). A decided item is reopened: its gold label is derived
    from the answers again, and the flag event keeps the decision it undid. Many items at once:
    `annotations.bulk.items_send_to_review`."""
    with transaction.atomic():
        Item.objects.select_for_update().filter(pk=item.pk).first()  # one flag at a time
        (review,) = reviews_open(
            project=item.project,
            item_ids=[item.pk],
            user_id=getattr(user, "pk", None),
            note=note,
            reason=reason,
        )
    return review
