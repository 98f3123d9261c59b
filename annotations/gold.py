"""Gold labels: each item's final label, derived from its answers and any review decision.

Precedence: a reviewer's decision, else the answers if unanimous, else their majority (or, when
the project says so, a consensus weighted by annotator quality and the model, written by
`curation.consensus`). A single-label tie has no gold label and goes to review.

`gold_refresh` keeps the `GoldLabel` rows and the disagreement side of the review queue in step
with the answers; `annotation_submit` calls it in the same transaction as the answer, so export
and training always read gold labels consistent with the answers that were acknowledged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotations.models import Annotation, GoldLabel, GoldSource, Item, Project, Review

# Rows re-read per query when a whole project is refreshed.
_BATCH = 2000
# Not a stored source: how exports and the quality report show the gold label of an item that
# still waits for answers (its stored row reflects the answers so far and may change).
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Gold:
    labels: list[str] | None  # None: no gold label (a tie)
    source: str
    agreement: float  # share of the answers equal to the majority answer
    answers: int


def derive(
    answers: Sequence[Sequence[str]], classes: Sequence[str], *, multi_label: bool
) -> Gold | None:
    """The gold label of one item from its non-skipped answers (each a list of class names).

    Single-label: the most common class; a tie for the top has no gold label. Multi-label: each
    class more than half of the answers chose (an empty set is a valid answer). Unanimous when
    every answer is the same. Names not in `classes` are ignored. None for no answers.
    """
    if not answers:
        return None
    known = set(classes)
    sets = [tuple(n for n in classes if n in set(a) and n in known) for a in answers]
    n = len(sets)
    if multi_label:
        votes = Counter(name for s in sets for name in s)
        labels = [c for c in classes if 2 * votes[c] > n]
        agreement = sum(1 for s in sets if list(s) == labels) / n
    else:
        votes = Counter(s[0] for s in sets if s)
        if not votes:
            return None
        top = votes.most_common()
        if len(top) > 1 and top[0][1] == top[1][1]:
            return Gold(None, GoldSource.TIE, top[0][1] / n, n)
        labels = [top[0][0]]
        agreement = top[0][1] / n
    source = GoldSource.UNANIMOUS if agreement == 1.0 else GoldSource.MAJORITY
    return Gold(labels, source, agreement, n)


def needs_review_for_disagreement(project: Project, gold: Gold | None, *, complete: bool) -> bool:
    """A complete item whose majority share is below the project's threshold (a tie always)."""
    if gold is None or gold.answers < 2 or not complete:
        return False
    return gold.labels is None or gold.agreement < project.review_threshold


def gold_refresh(
    project: Project, item_ids: Iterable[int], *, classes: Sequence[str] | None = None
) -> None:
    """Recompute the gold rows of these items from their answers and review decisions, and open
    or settle their disagreement reviews. Call inside the transaction that changed the answers.
    `classes`: the project's class names in schema order, when the caller has them.
    """
    ids = sorted(set(item_ids))
    if classes is None:
        classes = project.class_names()
    now = timezone.now()
    # No savepoint: callers are already in the transaction that changed the answers.
    with transaction.atomic(savepoint=False):
        for start in range(0, len(ids), _BATCH):
            _refresh_batch(project, ids[start : start + _BATCH], classes, now)


def _refresh_batch(project: Project, ids: list[int], classes: Sequence[str], now) -> None:
    given: dict[int, list[list[str]]] = defaultdict(list)
    for item_id, labels in Annotation.objects.filter(item_id__in=ids, skipped=False).values_list(
        "item_id", "labels"
    ):
        given[item_id].append(labels)
    # One query for the items' state, review and gold row (this runs on every submission).
    items: dict[int, bool] = {}  # item id → still open
    reviews: dict[int, Review] = {}
    current: dict[int, GoldLabel] = {}
    for item in (
        Item.objects.filter(pk__in=ids)
        .select_related("review", "gold")
        .only("id", "needs_annotation", "review", "gold")
    ):
        items[item.pk] = item.needs_annotation
        if (review := _related(item, "review")) is not None:
            reviews[item.pk] = review
        if (gold := _related(item, "gold")) is not None:
            current[item.pk] = gold
    _apply(project, given, items, reviews, current, classes, now)


def gold_refresh_item(
    project: Project,
    item: Item,
    *,
    answers: list[list[str]],
    complete: bool,
    classes: Sequence[str],
) -> None:
    """`gold_refresh` for one item whose non-skipped answers the caller has just read, locked
    with its review and gold row (`select_related("review", "gold")`): the submission's path,
    one write and no read."""
    reviews = {item.pk: r} if (r := _related(item, "review")) is not None else {}
    current = {item.pk: g} if (g := _related(item, "gold")) is not None else {}
    with transaction.atomic(savepoint=False):
        _apply(
            project,
            {item.pk: answers},
            {item.pk: not complete},
            reviews,
            current,
            classes,
            timezone.now(),
        )


def _apply(
    project: Project,
    given: dict[int, list[list[str]]],
    items: dict[int, bool],
    reviews: dict[int, Review],
    current: dict[int, GoldLabel],
    classes: Sequence[str],
    now,
) -> None:
    """Derive and write the gold rows of `items` (item id → still open) from `given` answers,
    their reviews and their current gold rows, settling disagreement reviews on the way."""
    write: list[GoldLabel] = []
    drop: list[int] = []
    for item_id, still_open in items.items():
        gold = derive(given.get(item_id, []), classes, multi_label=project.is_multi_label)
        review = reviews.get(item_id)
        _settle_disagreement(project, item_id, review, gold, complete=not still_open)
        if review is not None and review.status == Review.Status.DECIDED:
            write.append(
                GoldLabel(
                    item_id=item_id,
                    project=project,
                    labels=review.labels,
                    source=GoldSource.ADJUDICATED,
                    agreement=gold.agreement if gold else None,
                    answers=gold.answers if gold else 0,
                    updated_at=now,
                )
            )
        elif gold is None:
            if item_id in current:
                drop.append(item_id)
        else:
            previous = current.get(item_id)
            keep_consensus = (
                project.consensus == Project.Consensus.CROWDLAB
                and previous is not None
                and previous.source == GoldSource.CONSENSUS
                and previous.answers == gold.answers
            )
            write.append(
                GoldLabel(
                    item_id=item_id,
                    project=project,
                    labels=previous.labels if keep_consensus else gold.labels,
                    source=GoldSource.CONSENSUS if keep_consensus else gold.source,
                    agreement=gold.agreement,
                    answers=gold.answers,
                    updated_at=now,
                )
            )
    if drop:
        GoldLabel.objects.filter(item_id__in=drop).delete()
    if write:
        GoldLabel.objects.bulk_create(
            write,
            update_conflicts=True,
            unique_fields=["item"],
            update_fields=["labels", "source", "agreement", "answers", "updated_at"],
        )


def _related(item: Item, name: str):
    """A reverse one-to-one loaded by select_related, or None when the item has none."""
    try:
        return getattr(item, name)
    except ObjectDoesNotExist:
        return None


def _settle_disagreement(
    project: Project, item_id: int, review: Review | None, gold: Gold | None, *, complete: bool
) -> None:
    """Open a review for a disagreement, or drop the reason when the answers now agree (an
    open review left with no reason and no history is removed, even while a reviewer holds it:
    their decision is then answered "no longer needs review")."""
    disagree = needs_review_for_disagreement(project, gold, complete=complete)
    reason = Review.Reason.DISAGREEMENT
    if review is None:
        if disagree:
            Review.objects.create(project=project, item_id=item_id, reasons=[reason])
        return
    if review.status != Review.Status.OPEN:
        return
    has = reason in review.reasons
    if disagree and not has:
        review.reasons = [*review.reasons, reason]
        review.save(update_fields=["reasons", "updated_at"])
    elif has and not disagree:
        review.reasons = [r for r in review.reasons if r != reason]
        if review.reasons or review.events.exists():
            review.save(update_fields=["reasons", "updated_at"])
        else:
            review.delete()


def gold_rebuild(project: Project) -> None:
    """Every gold row of the project from scratch (after deletions, an overlap or schema change)."""
    with transaction.atomic():
        answered = set(
            Annotation.objects.filter(project=project, skipped=False).values_list(
                "item_id", flat=True
            )
        )
        has_answer = Annotation.objects.filter(item=OuterRef("item"), skipped=False)
        GoldLabel.objects.filter(project=project).exclude(Exists(has_answer)).exclude(
            source=GoldSource.ADJUDICATED
        ).delete()
        reviewed = set(Review.objects.filter(project=project).values_list("item_id", flat=True))
        gold_refresh(project, answered | reviewed)


def reviews_for_model_disagreement(
    project: Project, found: dict[int, tuple[list[str], float]]
) -> int:
    """Open reviews for items the model disputes: `found` maps an item id to the model's labels
    and confidence, predicted before it learned the item's label. Decided items stay decided.
    Returns the number of items newly sent to review."""
    if not found:
        return 0
    existing = {r.item_id: r for r in Review.objects.filter(item_id__in=list(found))}
    new = []
    for item_id, (labels, confidence) in found.items():
        review = existing.get(item_id)
        if review is None:
            new.append(
                Review(
                    project=project,
                    item_id=item_id,
                    reasons=[Review.Reason.MODEL],
                    model_labels=labels,
                    model_confidence=confidence,
                )
            )
        elif review.status == Review.Status.OPEN:
            if Review.Reason.MODEL not in review.reasons:
                review.reasons = [*review.reasons, Review.Reason.MODEL]
            review.model_labels = labels
            review.model_confidence = confidence
            review.save(update_fields=["reasons", "model_labels", "model_confidence", "updated_at"])
    Review.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)
