"""Answers made in another tool (Label Studio, doccano, a folder per class, COCO), imported with
the items they belong to.

Every answer in this app belongs to a user, and the rules that read answers (the overlap, gold
labels, agreement, annotator quality) count answers per user. So each distinct annotator of the
other tool becomes one account here, and their answers are ordinary `Annotation` rows:

- an external annotator with an email address that an account here already has is that account
  (a colleague who labelled in Label Studio keeps one identity);
- otherwise an account named `<tool>-<their id there>` (`labelstudio-17`; doccano, whose
  exports do not say who answered, is one source `doccano-import`) is found or created:
  inactive, with no usable password, so it can never log in, and its answers are never mixed
  with those of someone who can;
- the account becomes an annotator of the project unless it is a member already.

Imported answers are stored with their time and duration where the file has them, never through
the queue (they were not handed out here). The items' counts, completeness and gold labels are
then recomputed by `items_recount` (the bookkeeping `project_recount` does after deletions and
overlap changes, for the answered items only), so an item with as many imported answers as the
overlap is complete, a disagreement goes to review, and the model learns from the imported
labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotations.models import Annotation, Membership, Project
from annotations.services import items_recount
from curation.training_requests import request_training_on_commit

__all__ = [
    "AnswerImport",
    "AnswerIn",
    "ExternalAnnotator",
    "answers_import",
    "external_annotators_resolve",
    "external_id_of",
]

_BATCH = 2000
_UNSAFE = re.compile(r"[^\w.@+-]")


@dataclass(frozen=True)
class ExternalAnnotator:
    """Who answered, as the other tool names them: `tool` ("labelstudio", "doccano", …), their
    id there (`key`), and their email, first and last name when the file has them."""

    tool: str
    key: str
    email: str = field(default="", compare=False)
    first_name: str = field(default="", compare=False)
    last_name: str = field(default="", compare=False)

    @property
    def username(self) -> str:
        """The account name of an annotator without a matching email: `<tool>-<key>`."""
        key = _UNSAFE.sub("_", self.key.strip())[:100] or "unknown"
        return f"{self.tool}-{key}"


@dataclass(frozen=True)
class AnswerIn:
    """One imported answer for the item with the given database id."""

    item_id: int
    annotator: ExternalAnnotator
    labels: Sequence[str]
    skipped: bool = False
    time_spent_ms: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


def external_id_of(username: str, tool: str) -> str | None:
    """The id an account had in `tool` when an import made it (username `labelstudio-17` →
    "17"), else None: exports back to that tool give the annotator their old id."""
    name = username
    prefix = f"{tool}-"
    return name[len(prefix) :] if name.startswith(prefix) else None


def external_annotators_resolve(
    project: Project, annotators: Iterable[ExternalAnnotator]
) -> dict[ExternalAnnotator, AbstractBaseUser]:
    """The account for each external annotator (see the module's docstring), created when
    missing, and each made an annotator of `project` unless already a member. Call inside the
    import's transaction: a failed import leaves no accounts behind."""
    User = get_user_model()
    email_field = User.get_email_field_name()
    found: dict[ExternalAnnotator, AbstractBaseUser] = {}
    for annotator in dict.fromkeys(annotators):
        user = None
        if annotator.email:
            matches = list(User.objects.filter(**{f"{email_field}__iexact": annotator.email})[:2])
            user = matches[0] if len(matches) == 1 else None
        if user is None:
            user = User.objects.filter(**{User.USERNAME_FIELD: annotator.username}).first()
        if user is None:
            user = User(**{User.USERNAME_FIELD: annotator.username})
            user.is_active = False
            user.set_unusable_password()
            setattr(user, email_field, annotator.email)
            if hasattr(user, "first_name"):
                user.first_name = annotator.first_name[:150]
                user.last_name = annotator.last_name[:150]
            user.save()
        found[annotator] = user
    have = set(
        Membership.objects.filter(project=project, user__in=found.values()).values_list(
            "user_id", flat=True
        )
    )
    Membership.objects.bulk_create(
        [
            Membership(project=project, user=user, role=Membership.Role.ANNOTATOR)
            for user in {u.pk: u for u in found.values()}.values()
            if user.pk not in have
        ]
    )
    return found


class AnswerImport:
    """Imported answers stored a batch at a time as the items go in (`add`), then the one
    recount that puts the project's bookkeeping right (`finish`). Use inside the import's
    transaction; `answers_import` does both for answers already in hand."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.users: dict[ExternalAnnotator, AbstractBaseUser] = {}
        self.count = 0
        self.item_ids: set[int] = set()

    def add(self, answers: Sequence[AnswerIn]) -> int:
        """Store answers (labels already checked against the project's classes) for items of
        the project. Two answers from one account for one item is the caller's error (the
        unique constraint refuses it)."""
        if not answers:
            return 0
        new = [a.annotator for a in answers if a.annotator not in self.users]
        if new:
            self.users |= external_annotators_resolve(self.project, new)
        now = timezone.now()
        rows = []
        for a in answers:
            created = a.created_at or now
            rows.append(
                Annotation(
                    project=self.project,
                    item_id=a.item_id,
                    annotator=self.users[a.annotator],
                    labels=list(a.labels),
                    skipped=a.skipped,
                    time_spent_ms=max(0, min(int(a.time_spent_ms), 24 * 3600 * 1000)),
                    created_at=created,
                    updated_at=a.updated_at or created,
                )
            )
        fields = [f for f in Annotation._meta.concrete_fields if not f.primary_key]
        for start in range(0, len(rows), _BATCH):
            # raw=True, as Django's fixture loading saves: the rows keep the file's times
            # instead of auto_now(_add) stamping them with the import's.
            Annotation.objects._insert(rows[start : start + _BATCH], fields=fields, raw=True)
        self.count += len(rows)
        self.item_ids.update(a.item_id for a in answers)
        return len(rows)

    def finish(self) -> int:
        """Recount the answered items (answer counts and completeness, gold labels,
        disagreement reviews) and the project's progress, and have the model learn from the
        answers once they are committed. Returns how many answers were stored."""
        if self.count:
            items_recount(self.project, self.item_ids)
            request_training_on_commit(self.project.pk)
        return self.count


def answers_import(project: Project, answers: Sequence[AnswerIn]) -> int:
    """Store imported answers and recount the project (`AnswerImport`), in one transaction."""
    with transaction.atomic():
        batch = AnswerImport(project)
        batch.add(answers)
        return batch.finish()
