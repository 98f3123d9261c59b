"""A seeded project for the data browser's tests: items with random statuses, answers, gold
labels, predictions, label-error scores, outlier scores, duplicate groups and metadata, written
directly as rows, and the same facts kept in Python (`SeededItem`) so each filter and sort can
be checked against a plain reference implementation."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from annotations.models import (
    Annotation,
    GoldLabel,
    GoldSource,
    Item,
    ItemLease,
    Membership,
    Project,
    Review,
)
from annotations.services import project_create
from curation.dataset_models import (
    DuplicateGroup,
    ItemDuplicate,
    ItemOutlier,
    ItemPrediction,
    LabelIssue,
)
from tests.conftest import make_user

CLASSES = ["positive", "negative", "neutral"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta"]
COLOURS = ["red", "green", "blue"]


@dataclass
class SeededItem:
    pk: int
    external_id: str
    text: str
    status: str
    answers: int
    annotators: set[str] = field(default_factory=set)
    gold: list[str] | None = None
    gold_source: str = ""
    agreement: float | None = None
    predicted: str | None = None
    confidence: float | None = None
    error: float | None = None
    flag: str = ""
    outlier: float | None = None
    group: int | None = None
    metadata: dict = field(default_factory=dict)

    def words(self) -> set[str]:
        return set(re.findall(r"\w+", self.text.lower()))


@dataclass
class Seeded:
    project: Project
    items: list[SeededItem]
    annotators: list
    groups: list[int]


def _maybe(rng: random.Random, share: float, value):
    return value if rng.random() < share else None


def seed_project(n: int = 80, *, seed: int = 7, name: str = "Browse") -> Seeded:
    rng = random.Random(seed)
    project = project_create(name=name, classes=CLASSES)
    project.overlap = 2
    project.save(update_fields=["overlap"])
    users = [make_user(f"{name.lower()}-ann{i}") for i in range(3)]
    for user in users:
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    now = timezone.now()
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"e{i:03d}",
                text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + f" n{i}",
                metadata={
                    "colour": rng.choice(COLOURS),
                    "size": rng.choice([1, 2, 3]),
                    **({"lang": "en"} if rng.random() < 0.5 else {}),
                },
            )
            for i in range(n)
        ]
    )
    project.item_count = n
    project.save(update_fields=["item_count"])
    groups = [
        DuplicateGroup.objects.create(project=project, kind=DuplicateGroup.Kind.NEAR, size=0).pk
        for _ in range(4)
    ]
    seeded: list[SeededItem] = []
    annotations, leases, golds, reviews = [], [], [], []
    predictions, issues, outliers, duplicates = [], [], [], []
    for item in items:
        s = SeededItem(
            pk=item.pk,
            external_id=item.external_id,
            text=item.text,
            status="",
            answers=0,
            metadata=item.metadata,
        )
        answerers = rng.sample(users, rng.choice([0, 0, 1, 1, 2]))
        for user in answerers:
            skipped = rng.random() < 0.1
            annotations.append(
                Annotation(
                    project=project,
                    item=item,
                    annotator=user,
                    labels=[] if skipped else [rng.choice(CLASSES)],
                    skipped=skipped,
                )
            )
            if not skipped:
                s.annotators.add(user.username)
        s.answers = len(answerers)
        complete = s.answers >= 2
        Item.objects.filter(pk=item.pk).update(
            annotation_count=s.answers, needs_annotation=not complete
        )
        held = not complete and rng.random() < 0.25
        if held or rng.random() < 0.2:  # a live lease, or one that expired
            expires = now + timedelta(minutes=5) if held else now - timedelta(minutes=5)
            leases.append(
                ItemLease(
                    project=project,
                    item=item,
                    user=rng.choice(users),
                    created_at=now - timedelta(minutes=10),
                    expires_at=expires,
                )
            )
        review = rng.choice([None, None, None, Review.Status.OPEN, Review.Status.DECIDED])
        if review:
            reviews.append(Review(project=project, item=item, status=review, reasons=["flag"]))
        if s.answers:
            labels = _maybe(rng, 0.85, [rng.choice(CLASSES)])
            s.gold = labels
            s.gold_source = rng.choice([GoldSource.MAJORITY, GoldSource.UNANIMOUS])
            if labels is None:
                s.gold_source = GoldSource.TIE
            s.agreement = rng.choice([0.5, 1.0, None])
            golds.append(
                GoldLabel(
                    item=item,
                    project=project,
                    labels=labels,
                    source=s.gold_source,
                    agreement=s.agreement,
                    answers=s.answers,
                    updated_at=now,
                )
            )
        if rng.random() < 0.7:
            s.predicted = rng.choice(CLASSES)
            s.confidence = round(rng.choice([0.4, 0.5, 0.6, 0.7, 0.8, 0.9]), 2)  # ties on purpose
            predictions.append(
                ItemPrediction(
                    item=item,
                    project=project,
                    labels=[s.predicted],
                    label=s.predicted,
                    confidence=s.confidence,
                    version=3,
                    updated_at=now,
                )
            )
        if s.gold and rng.random() < 0.6:
            s.error = round(rng.random(), 1)
            s.flag = rng.choice(["", "flagged", "review", "dismissed"])
            issues.append(
                LabelIssue(
                    item=item,
                    project=project,
                    gold=s.gold,
                    score=s.error,
                    suggested=rng.choice(CLASSES),
                    status=s.flag,
                    updated_at=now,
                )
            )
        if rng.random() < 0.5:
            s.outlier = round(rng.random() * 3, 1)
            outliers.append(
                ItemOutlier(item=item, project=project, score=s.outlier, updated_at=now)
            )
        if rng.random() < 0.25:
            s.group = rng.choice(groups)
            duplicates.append(ItemDuplicate(item=item, group_id=s.group, project=project))
        s.status = _status(review, complete, held, s.answers)
        seeded.append(s)
    Annotation.objects.bulk_create(annotations)
    ItemLease.objects.bulk_create(leases)
    GoldLabel.objects.bulk_create(golds)
    Review.objects.bulk_create(reviews)
    ItemPrediction.objects.bulk_create(predictions)
    LabelIssue.objects.bulk_create(issues)
    ItemOutlier.objects.bulk_create(outliers)
    ItemDuplicate.objects.bulk_create(duplicates)
    return Seeded(project=project, items=seeded, annotators=users, groups=groups)


def _status(review, complete: bool, held: bool, answers: int) -> str:
    if review == Review.Status.DECIDED:
        return "decided"
    if review == Review.Status.OPEN:
        return "review"
    if complete:
        return "complete"
    if held:
        return "in_progress"
    return "partly" if answers else "open"


# --- The reference ----------------------------------------------------------------------------

SORT_ATTR = {
    "id": "pk",
    "answers": "answers",
    "agreement": "agreement",
    "confidence": "confidence",
    "error": "error",
    "outlier": "outlier",
}


def reference_filter(items: list[SeededItem], params: dict[str, str]) -> list[SeededItem]:
    """The items matching `params`, as the browser documents its filters."""

    def keep(s: SeededItem) -> bool:
        for key, value in params.items():
            if key == "q" and not set(value.lower().split()) <= s.words():
                return False
            if key == "status" and s.status != value:
                return False
            if key == "gold" and not (s.gold and value in s.gold):
                return False
            if key == "gold_source" and s.gold_source != value:
                return False
            if key == "annotator" and value not in s.annotators:
                return False
            if key == "predicted" and s.predicted != value:
                return False
            if key == "disagrees" and not (
                s.gold is not None and s.predicted is not None and set(s.gold) != {s.predicted}
            ):
                return False
            if key == "flag" and s.flag != value:
                return False
            if key == "duplicates" and s.group is None:
                return False
            if key == "group" and s.group != int(value):
                return False
            if key == "meta":
                k, _, v = value.partition("=")
                if str(s.metadata.get(k)) != v:
                    return False
            for name in ("confidence", "agreement", "error", "outlier"):
                got = getattr(s, name)
                if key == f"{name}_min" and (got is None or got < float(value)):
                    return False
                if key == f"{name}_max" and (got is None or got > float(value)):
                    return False
        return True

    return [s for s in items if keep(s)]


def reference_order(items: list[SeededItem], sort: str) -> list[int]:
    """Ids in the browser's order: by the value then id, in the sort's direction; items without
    a value after all the others, by id in the same direction."""
    desc = sort.startswith("-")
    attr = SORT_ATTR[sort.removeprefix("-")]
    valued = [s for s in items if getattr(s, attr) is not None]
    rest = [s for s in items if getattr(s, attr) is None]
    valued.sort(key=lambda s: (getattr(s, attr), s.pk), reverse=desc)
    rest.sort(key=lambda s: s.pk, reverse=desc)
    return [s.pk for s in valued + rest]
