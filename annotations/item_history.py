"""Everything known about one item, for the browser's item page and its API twin: the answers
(with their edits), the gold label and what changed it, the review and its log, the model's
predictions across versions, and the items like it (duplicates, nearest neighbours).

A gold label is derived, not stored with a history of its own (`annotations.gold`): it is
recomputed whenever an answer arrives or changes and when a reviewer decides. So its history is
told from the events that move it (answers, edits, review decisions and reopenings), each
with who and when, and the current gold label with the time it was last recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from annotations.browse.pages import excerpt_of
from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    ItemRelabel,
    Project,
    Review,
)
from curation.dataset_models import (
    ItemDuplicate,
    ItemOutlier,
    ItemPrediction,
    LabelIssue,
    PredictionChange,
)
from curation.models import EvalSample

MAX_GROUP_MEMBERS = 50
MAX_NEIGHBOURS = 20
_REASONS = dict(Review.Reason.choices)


@dataclass
class Event:
    """One line of the item's history."""

    at: datetime
    who: str
    what: str  # "answered", "skipped", "edited", "flagged", "decided", "reopened"
    labels: list[str] | None = None
    previous: list[str] | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "who": self.who,
            "what": self.what,
            "labels": self.labels,
            "previous": self.previous,
            "note": self.note,
        }


@dataclass
class ItemDetails:
    item: Item
    answers: list[dict[str, Any]]
    gold: dict[str, Any] | None
    history: list[Event]
    review: dict[str, Any] | None
    prediction: dict[str, Any] | None
    prediction_changes: list[dict[str, Any]]
    eval_sample: dict[str, Any] | None
    label_issue: dict[str, Any] | None
    duplicates: dict[str, Any] | None
    neighbours: list[dict[str, Any]] | None  # None: not computed yet
    extra: dict[str, Any] = field(default_factory=dict)
    relabels: list[dict[str, Any]] = field(default_factory=list)  # newest first


def _name(user) -> str:
    return user.get_username() if user is not None else "(removed user)"


def item_details(project: Project, item: Item) -> ItemDetails:
    """What the item page shows of `item` (already checked to belong to `project`)."""
    annotations = list(
        Annotation.objects.filter(item=item).select_related("annotator").order_by("created_at")
    )
    revisions = list(
        AnnotationRevision.objects.filter(annotation__item=item)
        .select_related("annotation__annotator")
        .order_by("created_at")
    )
    edits_of: dict[int, list[AnnotationRevision]] = {}
    for revision in revisions:
        edits_of.setdefault(revision.annotation_id, []).append(revision)
    answers = [
        {
            "annotator": _name(a.annotator),
            "labels": a.labels,
            "skipped": a.skipped,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
            "time_spent_ms": a.time_spent_ms,
            "edits": [
                {
                    "at": r.created_at,
                    "previous": None if r.previous_skipped else r.previous_labels,
                    "labels": None if r.skipped else r.labels,
                }
                for r in edits_of.get(a.pk, [])
            ],
        }
        for a in annotations
    ]
    history = [
        # An edited answer's first version is the first edit's `previous`.
        Event(
            at=a.created_at,
            who=_name(a.annotator),
            what="skipped" if _first_skipped(a, edits_of) else "answered",
            labels=_first_labels(a, edits_of),
        )
        for a in annotations
    ]
    history += [
        Event(
            at=r.created_at,
            who=_name(r.annotation.annotator),
            what="edited",
            labels=None if r.skipped else r.labels,
            previous=None if r.previous_skipped else r.previous_labels,
        )
        for r in revisions
    ]
    review = Review.objects.filter(item=item).select_related("decided_by", "flagged_by").first()
    review_data = None
    if review is not None:
        events = list(review.events.select_related("actor").order_by("created_at", "id"))
        history += [
            Event(
                at=e.created_at,
                who=_name(e.actor),
                what={"flag": "flagged", "decide": "decided", "reopen": "reopened"}.get(
                    e.action, e.action
                ),
                labels=e.labels,
                note=e.comment,
            )
            for e in events
        ]
        review_data = {
            "id": review.pk,
            "status": review.status,
            "reasons": [_REASONS.get(r, r) for r in review.reasons],
            "labels": review.labels,
            "decided_by": _name(review.decided_by) if review.decided_by_id else None,
            "decided_at": review.decided_at,
            "flag_note": review.flag_note,
            "comment": review.comment,
            "model_labels": review.model_labels,
            "model_confidence": review.model_confidence,
        }
    history.sort(key=lambda e: e.at)
    gold = GoldLabel.objects.filter(item=item).first()
    return ItemDetails(
        item=item,
        answers=answers,
        gold=None
        if gold is None
        else {
            "labels": gold.labels,
            "source": gold.source,
            "source_label": gold.get_source_display(),
            "agreement": gold.agreement,
            "answers": gold.answers,
            "updated_at": gold.updated_at,
        },
        history=history,
        review=review_data,
        relabels=_relabels(item, answers=annotations),
        **_model_view(item),
        **_similar(project, item),
    )


def _relabels(item: Item, *, answers: list[Annotation]) -> list[dict[str, Any]]:
    """The item's relabelling requests, newest first: who asked, when, how many new answers,
    how many are in (non-skipped answers the request did not keep), and how each ended."""
    out = []
    for r in ItemRelabel.objects.filter(item=item).select_related("requested_by"):
        kept = set(r.previous)
        out.append(
            {
                "requested_by": _name(r.requested_by) if r.requested_by_id else None,
                "created_at": r.created_at,
                "answers_wanted": r.answers_wanted,
                "new_answers": sum(
                    1
                    for a in answers
                    if a.pk not in kept and not a.skipped and a.created_at >= r.created_at
                ),
                "kept_answers": len(kept),
                "pending": r.completed_at is None,
                "outcome": r.outcome,
                "outcome_label": r.get_outcome_display(),
                "completed_at": r.completed_at,
            }
        )
    return out


def _first_labels(a: Annotation, edits_of: dict) -> list[str] | None:
    edits = edits_of.get(a.pk)
    if edits:
        return None if edits[0].previous_skipped else edits[0].previous_labels
    return None if a.skipped else a.labels


def _first_skipped(a: Annotation, edits_of: dict) -> bool:
    edits = edits_of.get(a.pk)
    return edits[0].previous_skipped if edits else a.skipped


def _model_view(item: Item) -> dict[str, Any]:
    prediction = ItemPrediction.objects.filter(item=item).first()
    changes = PredictionChange.objects.filter(item=item).order_by("version")
    sample = EvalSample.objects.filter(item=item).first()
    issue = LabelIssue.objects.filter(item=item).first()
    return {
        "prediction": None
        if prediction is None
        else {
            "labels": prediction.labels,
            "label": prediction.label,
            "confidence": prediction.confidence,
            "version": prediction.version,
            "updated_at": prediction.updated_at,
        },
        "prediction_changes": [
            {
                "version": c.version,
                "labels": c.labels,
                "confidence": c.confidence,
                "created_at": c.created_at,
            }
            for c in changes
        ],
        "eval_sample": None
        if sample is None
        else {
            "predicted": sample.predicted,
            "confidence": sample.confidence,
            "version": sample.predicted_by,
            "truth": sample.truth,
            "correct": sample.correct,
        },
        "label_issue": None
        if issue is None
        else {
            "score": issue.score,
            "gold": issue.gold,
            "suggested": issue.suggested,
            "probabilities": sorted(issue.probabilities.items(), key=lambda kv: -kv[1])
            if isinstance(issue.probabilities, dict)
            else [],
            "status": issue.status,
            "status_label": issue.get_status_display(),
            "model_version": issue.model_version,
        },
    }


def _similar(project: Project, item: Item) -> dict[str, Any]:
    duplicates = None
    membership = ItemDuplicate.objects.filter(item=item).select_related("group").first()
    if membership is not None:
        group = membership.group
        others = (
            ItemDuplicate.objects.filter(group=group, project=project)
            .exclude(item=item)
            .select_related("item", "item__gold")
            .order_by("item_id")[:MAX_GROUP_MEMBERS]
        )
        duplicates = {
            "group": group.pk,
            "kind": group.kind,
            "size": group.size,
            "conflicting": group.conflicting,
            "members": [_brief(d.item, similarity=d.similarity) for d in others],
        }
    neighbours = None
    outlier = ItemOutlier.objects.filter(item=item).first()
    if outlier is not None and outlier.neighbours:
        pairs = [p for p in outlier.neighbours if isinstance(p, list | tuple) and len(p) == 2]
        pairs = pairs[:MAX_NEIGHBOURS]
        found = (
            Item.objects.filter(project=project, pk__in=[int(p[0]) for p in pairs])
            .select_related("gold")
            .in_bulk()
        )
        neighbours = [
            _brief(found[int(pk)], similarity=float(sim)) for pk, sim in pairs if int(pk) in found
        ]
    return {
        "duplicates": duplicates,
        "neighbours": neighbours,
        "extra": {"outlier_score": outlier.score if outlier is not None else None},
    }


def _brief(item: Item, *, similarity: float | None = None) -> dict[str, Any]:
    gold = getattr(item, "gold", None)
    return {
        "id": item.pk,
        "external_id": item.external_id,
        "excerpt": excerpt_of(item.text, 120),
        "gold": gold.labels if gold is not None else None,
        "similarity": similarity,
    }
