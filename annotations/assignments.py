"""Items assigned to named annotators by a project admin, like Label Studio's manual
distribution: a calibration set every annotator labels, or a slice for one person.

What an assignment means:
- An assigned item goes only to its assignees, ahead of their ranked queue
  (`queue._assigned_new`), and to no one else, whatever the project's overlap.
- It is complete once every assignee has answered it. A skip is not an answer: an assignee who
  skips keeps it open (remove their assignment to let it complete). Answers given by others
  before it was assigned stay and count, but never stand in for an assignee's, so
  `Item.required_answers` is the number of assignees plus those other answers.
- Assigning is additive and idempotent: it adds assignees to those an item has; assigning
  the same pair again changes nothing. Assigning a complete item reopens it for the assignees
  who have not answered it yet.
- An item whose last assignee is removed goes back to the shared queue under the project's
  overlap (`required_answers` None). Removing a member removes their assignments.
- Leases that people other than the assignees hold on newly assigned items are dropped, so the
  items leave their queues at the next fetch.

Items are picked by external id (one per line; any unknown id refuses the whole list, naming
the lines) or as N random open items that are not assigned yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber
from django.utils.text import Truncator

from annotations import access
from annotations.events import publish_progress_on_commit
from annotations.gold import gold_refresh
from annotations.locks import project_write_lock
from annotations.models import Annotation, Item, ItemAssignment, ItemLease, Membership, Project

# One form submission assigns at most this many items (one UPDATE per step, a few ms per 1k).
MAX_ITEMS = 10_000
# And at most this many (item, annotator) pairs: 10,000 items to 20 annotators.
MAX_PAIRS = 200_000
# Unknown ids named in an error message (each cut to a readable length); the rest are counted.
_NAMED_UNKNOWN = 20
_SHOWN_CHARS = 80


@dataclass(frozen=True)
class AssignResult:
    created: int  # new (item, user) pairs
    items: int
    users: int


@dataclass(frozen=True)
class AssigneeProgress:
    user_id: int
    username: str
    role: str | None  # None: no longer a member (should not happen; shown as such)
    assigned: int
    answered: int
    skipped: int

    @property
    def open(self) -> int:
        return self.assigned - self.answered - self.skipped

    @property
    def percent(self) -> int:
        return int(100 * self.answered / self.assigned) if self.assigned else 0


# --- Picking items ----------------------------------------------------------------------------


def items_by_external_ids(*, project: Project, text: str) -> list[Item]:
    """The project's items named in `text`, one external id per line (blank lines and repeats
    are ignored). Any id the project does not have refuses the whole list."""
    wanted: dict[str, int] = {}  # id -> first line it is on
    for number, line in enumerate(text.splitlines(), start=1):
        external_id = line.strip()
        if external_id:
            wanted.setdefault(external_id, number)
    if not wanted:
        raise ValidationError({"external_ids": "List at least one item id, one per line."})
    if len(wanted) > MAX_ITEMS:
        raise ValidationError(
            {"external_ids": f"At most {MAX_ITEMS:,} items at a time; {len(wanted):,} listed."}
        )
    items = list(Item.objects.filter(project=project, external_id__in=list(wanted)))
    found = {i.external_id for i in items}
    unknown = [(line, eid) for eid, line in wanted.items() if eid not in found]
    if unknown:
        named = ", ".join(
            f"line {line}: {Truncator(eid).chars(_SHOWN_CHARS)!r}"
            for line, eid in unknown[:_NAMED_UNKNOWN]
        )
        more = len(unknown) - _NAMED_UNKNOWN
        tail = f" and {more:,} more" if more > 0 else ""
        raise ValidationError(
            {
                "external_ids": f"{len(unknown):,} id(s) are not items of this project "
                f"({named}{tail}). Nothing was assigned."
            }
        )
    return sorted(items, key=lambda i: wanted[i.external_id])


def items_random_open(*, project: Project, count: int) -> list[Item]:
    """Up to `count` items drawn at random from the open items no one is assigned yet.

    ORDER BY random() reads the ids of every open item once (an index scan of the queue's
    partial index); fine for an admin action, even at a million items."""
    if not 1 <= count <= MAX_ITEMS:
        raise ValidationError({"count": f"Choose between 1 and {MAX_ITEMS:,} items."})
    ids = list(
        Item.objects.filter(project=project, needs_annotation=True, required_answers__isnull=True)
        .order_by("?")
        .values_list("pk", flat=True)[:count]
    )
    if not ids:
        raise ValidationError({"count": "This project has no open, unassigned items."})
    return list(Item.objects.filter(pk__in=ids))


# --- Writing ----------------------------------------------------------------------------------


def assignment_create(
    *,
    project: Project,
    items: Sequence[Item],
    users: Sequence[AbstractBaseUser],
    assigned_by: AbstractBaseUser | None,
) -> AssignResult:
    """Assign every one of `items` to every one of `users` (members who may annotate)."""
    item_ids = sorted({i.pk for i in items})
    user_ids = sorted({u.pk for u in users})
    if not item_ids:
        raise ValidationError({"items": "Choose at least one item."})
    if len(item_ids) > MAX_ITEMS:
        raise ValidationError({"items": f"At most {MAX_ITEMS:,} items at a time."})
    if not user_ids:
        raise ValidationError({"users": "Choose at least one annotator."})
    if len(item_ids) * len(user_ids) > MAX_PAIRS:
        raise ValidationError(
            f"That is {len(item_ids) * len(user_ids):,} assignments; at most {MAX_PAIRS:,} "
            "at a time."
        )
    if Item.objects.filter(pk__in=item_ids).exclude(project=project).exists():
        raise ValidationError({"items": "Some items are not items of this project."})
    with transaction.atomic():
        project_write_lock(project.pk, exclusive=False)  # before items: `annotations.locks`
        # Locked, so a member removed meanwhile (`membership_remove`) is not assigned after.
        annotating = set(
            Membership.objects.select_for_update()
            .filter(project=project, user_id__in=user_ids, role__in=access.ANNOTATE)
            .order_by("pk")
            .values_list("user_id", flat=True)
        )
        if outside := [u for u in users if u.pk not in annotating]:
            names = ", ".join(sorted({u.get_username() for u in outside}))
            raise ValidationError({"users": f"Not annotators of this project: {names}."})
        before = _lock_items(item_ids)
        rows = [
            ItemAssignment(project=project, item_id=i, user_id=u, assigned_by=assigned_by)
            for i in item_ids
            for u in user_ids
        ]
        existing = ItemAssignment.objects.filter(item_id__in=item_ids, user_id__in=user_ids)
        created = len(rows) - existing.count()
        ItemAssignment.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
        # People other than the assignees drop these items from their pages' queues.
        is_assignee = ItemAssignment.objects.filter(item=OuterRef("item"), user=OuterRef("user"))
        ItemLease.objects.filter(item_id__in=item_ids).exclude(Exists(is_assignee)).delete()
        _retarget(project, item_ids, before)
    return AssignResult(created=created, items=len(item_ids), users=len(user_ids))


def assignment_remove(
    *,
    project: Project,
    users: Iterable[AbstractBaseUser],
    items: Sequence[Item] | None = None,
) -> int:
    """Remove these users' assignments in `project` (only on `items` when given). Items left
    without an assignee go back to the shared queue. Returns the assignments removed."""
    assignments = ItemAssignment.objects.filter(
        project=project, user_id__in=sorted({u.pk for u in users})
    )
    if items is not None:
        assignments = assignments.filter(item_id__in=[i.pk for i in items])
    return assignments_delete(assignments)


def assignments_delete(assignments: QuerySet[ItemAssignment]) -> int:
    """Delete these assignment rows (of any projects; the admin's delete) and retarget their
    items. Returns the assignments removed."""
    removed = 0
    with transaction.atomic():
        rows = assignments.order_by().values_list("project_id", "item_id").distinct()
        by_project: dict[int, set[int]] = {}
        for project_id, item_id in rows:
            by_project.setdefault(project_id, set()).add(item_id)
        for project in Project.objects.filter(pk__in=list(by_project)).order_by("pk"):
            item_ids = sorted(by_project[project.pk])
            project_write_lock(project.pk, exclusive=False)  # before items: `annotations.locks`
            before = _lock_items(item_ids)
            deleted, _ = ItemAssignment.objects.filter(
                pk__in=assignments.filter(project=project, item_id__in=item_ids).values("pk")
            ).delete()
            removed += deleted
            _retarget(project, item_ids, before)
    return removed


def _lock_items(item_ids: list[int]) -> dict[int, bool]:
    """Lock the items (in id order, as submissions lock one item each) and return whether each
    is open, so answers cannot move the counters between our reads and writes."""
    return dict(
        Item.objects.select_for_update()
        .filter(pk__in=item_ids)
        .order_by("pk")
        .values_list("pk", "needs_annotation")
    )


def required_answers() -> Case:
    """An item's required answers, as an expression for `Item` rows: its assignees plus the
    non-skipped answers others gave before it was assigned (they count towards completion, and
    every assignee must still get it); None for an item with no assignee."""
    assignees = (
        ItemAssignment.objects.filter(item=OuterRef("pk"))
        .order_by()
        .values("item")
        .annotate(n=Count("id"))
        .values("n")
    )
    is_assignee = ItemAssignment.objects.filter(item=OuterRef("item"), user=OuterRef("annotator"))
    others = (
        Annotation.objects.filter(item=OuterRef("pk"), skipped=False)
        .exclude(Exists(is_assignee))
        .order_by()
        .values("item")
        .annotate(n=Count("id"))
        .values("n")
    )
    n_assignees = Coalesce(Subquery(assignees, output_field=IntegerField()), Value(0))
    n_others = Coalesce(Subquery(others, output_field=IntegerField()), Value(0))
    return Case(
        When(
            Exists(ItemAssignment.objects.filter(item=OuterRef("pk"))),
            then=n_assignees + n_others,
        ),
        default=Value(None),
        output_field=IntegerField(),
    )


def _retarget(project: Project, item_ids: list[int], before: dict[int, bool]) -> None:
    """Set the locked items' required answers from their assignees and the answers of others,
    reopen or complete them accordingly, and move the project's complete count by the items
    whose state changed (set-wise, so it stays exact without a recount of the project)."""
    items = Item.objects.filter(pk__in=item_ids)
    # An assigned item's target counts every answer given by others already (those of a
    # relabelling round too), so a pending relabelling is folded into it.
    items.update(required_answers=required_answers())
    items.filter(required_answers__isnull=False, relabel_answers__gt=0).update(relabel_answers=0)
    overlap = Project.objects.values_list("overlap", flat=True).get(pk=project.pk)
    items.update(
        needs_annotation=Case(
            When(
                annotation_count__lt=Coalesce(F("required_answers"), Value(overlap))
                + F("relabel_answers"),
                then=Value(True),
            ),
            default=Value(False),
        )
    )
    after = dict(items.values_list("pk", "needs_annotation"))
    changed = [pk for pk, is_open in after.items() if before.get(pk) != is_open]
    if not changed:
        return
    delta = sum(1 if before[pk] else -1 for pk in changed)  # open -> complete counts +1
    if delta:
        Project.objects.filter(pk=project.pk).update(complete_count=F("complete_count") + delta)
    # A disagreement is reviewed once the item is complete: settle reviews for the new state.
    gold_refresh(project, changed)
    publish_progress_on_commit(project.pk, changed[0])


# --- Reading ----------------------------------------------------------------------------------


def assignment_progress(*, project: Project) -> list[AssigneeProgress]:
    """Per assignee, by username: items assigned, answered and skipped."""
    answer = Annotation.objects.filter(item=OuterRef("item"), annotator=OuterRef("user"))
    rows = (
        ItemAssignment.objects.filter(project=project)
        .order_by()
        .values("user_id", "user__username")
        .annotate(
            assigned=Count("id"),
            answered=Count("id", filter=Q(Exists(answer.filter(skipped=False)))),
            skipped=Count("id", filter=Q(Exists(answer.filter(skipped=True)))),
        )
        .order_by("user__username")
    )
    roles = dict(Membership.objects.filter(project=project).values_list("user_id", "role"))
    return [
        AssigneeProgress(
            user_id=r["user_id"],
            username=r["user__username"],
            role=roles.get(r["user_id"]),
            assigned=r["assigned"],
            answered=r["answered"],
            skipped=r["skipped"],
        )
        for r in rows
    ]


def assigned_items_sample(*, project: Project, per_user: int = 50) -> dict[int, list[dict]]:
    """The first `per_user` items assigned to each assignee (by item id), with whether they
    answered each: user id -> [{"external_id", "answered", "skipped"}]."""
    answer = Annotation.objects.filter(item=OuterRef("item"), annotator=OuterRef("user"))
    rows = (
        ItemAssignment.objects.filter(project=project)
        .annotate(
            rank=Window(RowNumber(), partition_by=F("user_id"), order_by=F("item_id").asc()),
            answered=Exists(answer.filter(skipped=False)),
            skipped=Exists(answer.filter(skipped=True)),
        )
        .filter(rank__lte=per_user)
        .order_by("user_id", "item_id")
        .values("user_id", "item__external_id", "answered", "skipped")
    )
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["user_id"], []).append(
            {
                "external_id": r["item__external_id"],
                "answered": r["answered"],
                "skipped": r["skipped"],
            }
        )
    return out
