"""Bulk actions on a project's items: send to review, send back for relabelling, assign to
annotators, delete, export. One service function per action; the data browser's pages, the
API, `manage.py items_action` and the Django admin all call them, and each run is recorded as
an `ItemAction` (who, when, how many, with what).

The items are a `Selection`: ids picked by hand, or every item matching the browser's filter
(its querystring), resolved when the action runs (`Selection.resolve`). Actions that touch
many rows work a chunk of `CHUNK` items at a time, each chunk one transaction holding the
project's shared write lock and the chunk's item rows (in id order, as submissions lock theirs:
`annotations.locks`), so a concurrent submission waits for the chunk, then sees its effect, and
is never lost; `ItemAction.done_count` and the `progress` callback follow the chunks. Deletion
is one transaction under the exclusive write lock, like every deletion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import QueryDict
from django.utils import timezone

from annotations import access, exports
from annotations.assignments import assignment_create
from annotations.events import publish_progress_on_commit
from annotations.flags import reviews_open
from annotations.locks import project_write_lock
from annotations.models import (
    Annotation,
    DeletedItem,
    GoldLabel,
    Item,
    ItemAction,
    ItemAssignment,
    ItemRelabel,
    Project,
    Review,
)
from annotations.services import items_delete

Kind = ItemAction.Kind
Progress = Callable[[int, int], None]  # (items done, items in all)

CHUNK = 1000
# Ids picked by hand (a page's checkboxes, an API call): beyond this, select with a filter.
MAX_PICKED = 10_000
# Who may run each action (`annotations.access`). Assigning is a project admin's decision, as on
# the assignments page; deleting too.
ROLES: dict[str, frozenset[str]] = {
    Kind.REVIEW: access.REVIEW,
    Kind.RELABEL: access.REVIEW,
    Kind.ASSIGN: access.MANAGE,
    Kind.DELETE: access.MANAGE,
    Kind.EXPORT: access.EXPORT,
}
# Reasons a person may give when sending items to review (the others are the app's own).
REVIEW_REASONS = (
    Review.Reason.FLAG,
    Review.Reason.LABEL_ERROR,
    Review.Reason.DUPLICATE,
    Review.Reason.RELABEL,
)


@dataclass(frozen=True)
class Selection:
    """Which items an action takes: `ids` picked by hand, or all items matching `filter` (the
    data browser's querystring; "" matches every item of the project)."""

    ids: tuple[int, ...] | None = None
    filter: str = ""

    @classmethod
    def of_ids(cls, ids: Iterable[int]) -> Selection:
        try:
            picked = tuple(sorted({int(i) for i in ids}))
        except (TypeError, ValueError):
            raise ValidationError({"items": "Item ids are whole numbers."}) from None
        if not picked:
            raise ValidationError({"items": "Select at least one item."})
        if len(picked) > MAX_PICKED:
            raise ValidationError(
                {"items": f"At most {MAX_PICKED:,} items by id; use a filter for more."}
            )
        return cls(ids=picked)

    @classmethod
    def matching(cls, querystring: str) -> Selection:
        return cls(filter=(querystring or "").lstrip("?"))

    def resolve(self, project: Project) -> QuerySet[Item]:
        """The selected items of `project`, as they are now. Unknown ids, or ids of another
        project's items, refuse the whole selection (`ValidationError` on "items"); a bad
        filter names what is wrong with it (on "filter")."""
        if self.ids is not None:
            items = Item.objects.filter(project=project, pk__in=self.ids)
            found = items.count()
            if found != len(self.ids):
                raise ValidationError(
                    {
                        "items": f"{len(self.ids) - found:,} of the selected ids are not items "
                        "of this project (deleted meanwhile?). Nothing was done."
                    }
                )
            return items
        # Imported here: the browser's query language is the data browser's module.
        from annotations import browse

        try:
            query = browse.BrowseQuery.from_querydict(project, QueryDict(self.filter))
        except browse.BrowseQueryError as exc:
            raise ValidationError({"filter": str(exc)}) from None
        return browse.items_matching(project, query)

    def count(self, project: Project) -> int:
        """How many items the action would take now (the confirmation's and dry run's count)."""
        return self.resolve(project).count()

    def describe(self) -> dict:
        return {"items": list(self.ids)} if self.ids is not None else {}


@dataclass
class ActionResult:
    action: ItemAction
    done: int  # items acted on
    skipped: int = 0  # selected, left alone (see each action)
    notes: list[str] = field(default_factory=list)


def _start(
    *,
    project: Project,
    kind: str,
    user: AbstractBaseUser | None,
    selection: Selection,
    count: int,
    params: dict,
) -> ItemAction:
    """Record the action before its first chunk (committed on its own when chunked, so a run
    that fails halfway is on record with how far it got)."""
    return ItemAction.objects.create(
        project=project,
        action=kind,
        user=user,
        item_count=count,
        params={**params, **selection.describe()},
        filter=selection.filter if selection.ids is None else "",
    )


def _finish(action: ItemAction, done: int, **params) -> None:
    action.done_count = done
    action.finished_at = timezone.now()
    action.params = {**action.params, **params}
    action.save(update_fields=["done_count", "finished_at", "params"])


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


def _lock_chunk(project: Project, ids: list[int]) -> list[tuple]:
    """Take the project's shared write lock and the chunk's item rows, in id order (the order
    of `annotations.locks`); returns (id, needs_annotation, annotation_count, required_answers)
    of the items still there."""
    project_write_lock(project.pk, exclusive=False)
    return list(
        Item.objects.select_for_update(of=("self",), no_key=True)
        .filter(project=project, pk__in=ids)
        .order_by("pk")
        .values_list("pk", "needs_annotation", "annotation_count", "required_answers")
    )


def _snapshot(project: Project, selection: Selection) -> list[int]:
    return list(selection.resolve(project).order_by("pk").values_list("pk", flat=True))


# --- Send to review ---------------------------------------------------------------------------


def items_send_to_review(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    selection: Selection,
    reason: str = Review.Reason.FLAG,
    note: str = "",
    progress: Progress | None = None,
) -> ActionResult:
    """Send the selected items to review with `reason` (a `Review.Reason`) and `note`, as
    `review.review_flag` does one item: open reviews get the reason added, decided ones are
    reopened (their gold label is derived from the answers again). `user` None: an analysis
    (likely label errors, duplicates) sends them. A few queries per chunk of items."""
    if reason not in Review.Reason.values:
        raise ValidationError(
            {"reason": f"Unknown reason {reason!r}; one of {', '.join(Review.Reason.values)}."}
        )
    ids = _snapshot(project, selection)
    action = _start(
        project=project,
        kind=Kind.REVIEW,
        user=user,
        selection=selection,
        count=len(ids),
        params={"reason": reason, "note": note},
    )
    done = 0
    for chunk in _chunks(ids):
        with transaction.atomic():
            present = [row[0] for row in _lock_chunk(project, chunk)]
            reviews_open(
                project=project,
                item_ids=present,
                user_id=getattr(user, "pk", None),
                note=note,
                reason=reason,
            )
            done += len(present)
            ItemAction.objects.filter(pk=action.pk).update(done_count=done)
        if progress:
            progress(done, len(ids))
    _finish(action, done)
    return ActionResult(action=action, done=done, skipped=len(ids) - done)


# --- Send back for relabelling ----------------------------------------------------------------


def items_relabel(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    selection: Selection,
    note: str = "",
    progress: Progress | None = None,
) -> ActionResult:
    """Ask for a new round of answers on the selected items, keeping the ones they have.

    Semantics, per item with at least one answer (items nobody answered yet already wait for
    answers and are skipped):
    - it wants the project's overlap in *new* answers on top of the non-skipped answers it has:
      `Item.relabel_answers` is set to that count, so `answers_wanted` is overlap + answers
      kept, and it is open again (`needs_annotation`). The project's `complete_count` drops by
      the items that were complete, in the same transaction, so no counter drifts and
      `project_recount` computes the same.
    - the queue serves it to annotators who have not answered it (it never serves an item to
      someone who did), with the exclusivity of the overlap; an assigned item goes back to the
      shared queue (its assignments are removed: every assignee's answer is kept).
    - its earlier answers stay (exports, agreement, quality), listed in `ItemRelabel.previous`;
      its gold label stays as it is, for training and exports, until the new answers are in.
    - the submission that brings the last new answer refreshes the gold label from all the
      answers and sends the item to review with reason "relabelled" (`flags.relabel_arrived`);
      the reviewer sees the earlier answers apart from the new ones.
    """
    ids = _snapshot(project, selection)
    action = _start(
        project=project,
        kind=Kind.RELABEL,
        user=user,
        selection=selection,
        count=len(ids),
        params={"note": note},
    )
    done = unassigned = seen = 0
    for chunk in _chunks(ids):
        with transaction.atomic():
            rows = _lock_chunk(project, chunk)
            answered = [row for row in rows if row[2] > 0]
            if answered:
                unassigned += _relabel_chunk(project, action, user, answered)
            done += len(answered)
            ItemAction.objects.filter(pk=action.pk).update(done_count=done)
        seen += len(chunk)
        if progress:
            progress(seen, len(ids))
    _finish(action, done, assignments_removed=unassigned)
    notes = [f"{unassigned:,} assignment(s) removed."] if unassigned else []
    return ActionResult(action=action, done=done, skipped=len(ids) - done, notes=notes)


def _relabel_chunk(
    project: Project, action: ItemAction, user: AbstractBaseUser | None, rows: list[tuple]
) -> int:
    """Reopen these locked items (id, needs_annotation, count, required) for a new round."""
    ids = [row[0] for row in rows]
    overlap = Project.objects.values_list("overlap", flat=True).get(pk=project.pk)
    unassigned, _ = ItemAssignment.objects.filter(item_id__in=ids).delete()
    previous: dict[int, list[int]] = {i: [] for i in ids}
    for item_id, answer_id in Annotation.objects.filter(item_id__in=ids).values_list(
        "item_id", "id"
    ):
        previous[item_id].append(answer_id)
    Item.objects.filter(pk__in=ids).update(
        relabel_answers=F("annotation_count"), required_answers=None, needs_annotation=True
    )
    reopened = sum(1 for row in rows if not row[1])
    if reopened:
        Project.objects.filter(pk=project.pk).update(complete_count=F("complete_count") - reopened)
    ItemRelabel.objects.bulk_create(
        [
            ItemRelabel(
                action=action,
                item_id=item_id,
                requested_by=user,
                previous=previous[item_id],
                answers_wanted=overlap,
            )
            for item_id in ids
        ]
    )
    publish_progress_on_commit(project.pk, ids[0])
    return unassigned


# --- Assign -----------------------------------------------------------------------------------


def items_assign(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    selection: Selection,
    users: Sequence[AbstractBaseUser],
    progress: Progress | None = None,
) -> ActionResult:
    """Assign the selected items to these annotators (`assignments.assignment_create`: additive,
    idempotent, the items go only to their assignees). Chunked so each call stays within the
    assignment limits; any user who may not annotate refuses the whole action up front."""
    if not users:
        raise ValidationError({"users": "Choose at least one annotator."})
    ids = _snapshot(project, selection)
    per_call = max(1, min(CHUNK, 200_000 // len(users)))
    action = _start(
        project=project,
        kind=Kind.ASSIGN,
        user=user,
        selection=selection,
        count=len(ids),
        params={"users": sorted(u.get_username() for u in users)},
    )
    done = created = 0
    for start in range(0, len(ids), per_call):
        chunk = ids[start : start + per_call]
        present = list(Item.objects.filter(project=project, pk__in=chunk).only("pk"))
        if present:
            try:
                result = assignment_create(
                    project=project, items=present, users=users, assigned_by=user
                )
            except ValidationError:
                if done == 0:
                    action.delete()  # refused before anything changed: nothing to record
                raise
            created += result.created
            done += len(present)
            ItemAction.objects.filter(pk=action.pk).update(done_count=done)
        if progress:
            progress(start + len(chunk), len(ids))
    _finish(action, done, assignments_created=created)
    return ActionResult(
        action=action,
        done=done,
        skipped=len(ids) - done,
        notes=[f"{created:,} new assignment(s)."],
    )


# --- Delete -----------------------------------------------------------------------------------


def items_delete_recorded(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    selection: Selection,
    progress: Progress | None = None,
) -> ActionResult:
    """Delete the selected items with their answers, reviews and leases (`services.items_delete`,
    which recounts the project), keeping a `DeletedItem` per item: external id, content,
    metadata, gold label and answer count. All or nothing, under the project's exclusive write
    lock: submissions in flight finish first, and the selection is resolved once they have."""
    with transaction.atomic():
        project_write_lock(project.pk, exclusive=True)
        items = selection.resolve(project)
        count = items.count()
        action = _start(
            project=project,
            kind=Kind.DELETE,
            user=user,
            selection=selection,
            count=count,
            params={},
        )
        gold = GoldLabel.objects.filter(item_id__in=items.values("pk"))
        golds = {
            item_id: {"labels": labels, "source": source}
            for item_id, labels, source in gold.values_list("item_id", "labels", "source")
        }
        rows = (
            items.order_by("pk")
            .values_list("pk", "external_id", "text", "image", "metadata", "annotation_count")
            .iterator(chunk_size=CHUNK)
        )
        batch: list[DeletedItem] = []
        recorded = 0
        for pk, external_id, text, image, metadata, answers in rows:
            batch.append(
                DeletedItem(
                    action=action,
                    item_id=pk,
                    external_id=external_id,
                    text=text,
                    image=image or "",
                    metadata=metadata,
                    gold=golds.get(pk),
                    answers=answers,
                )
            )
            if len(batch) >= CHUNK:
                DeletedItem.objects.bulk_create(batch)
                recorded += len(batch)
                batch = []
                if progress:
                    progress(recorded, count)
        DeletedItem.objects.bulk_create(batch)
        items_delete(
            Item.objects.filter(pk__in=DeletedItem.objects.filter(action=action).values("item_id"))
        )
        _finish(action, count)
        publish_progress_on_commit(project.pk, 0)
    if progress:
        progress(count, count)
    return ActionResult(action=action, done=count)


# --- Export -----------------------------------------------------------------------------------


def items_export(
    *, project: Project, user: AbstractBaseUser | None, selection: Selection, fmt: str
) -> tuple[ActionResult, Iterator[str]]:
    """The selected items in the project export's format `fmt` (`exports`: jsonl or csv), as a
    stream of text chunks, and the action's record. Bad input is refused before the stream
    starts."""
    if fmt not in exports.formats_for(project):
        raise ValidationError(
            {
                "format": f"Unknown format {fmt!r} for this project; use "
                f"{', '.join(exports.formats_for(project))}."
            }
        )
    items = selection.resolve(project)
    count = items.count()
    action = _start(
        project=project,
        kind=Kind.EXPORT,
        user=user,
        selection=selection,
        count=count,
        params={"format": fmt},
    )
    _finish(action, count)
    return ActionResult(action=action, done=count), exports.export_chunks(project, fmt, items=items)


# --- One entry point for the pages, the API and the command ----------------------------------


def item_action_run(
    *,
    project: Project,
    user: AbstractBaseUser | None,
    action: str,
    selection: Selection,
    reason: str = Review.Reason.FLAG,
    note: str = "",
    users: Sequence[AbstractBaseUser] = (),
    progress: Progress | None = None,
) -> ActionResult:
    """Run `action` (review, relabel, assign or delete) on the selection. Roles are the
    caller's to check (`ROLES`); the command runs as no one."""
    if action == Kind.REVIEW:
        return items_send_to_review(
            project=project,
            user=user,
            selection=selection,
            reason=reason,
            note=note,
            progress=progress,
        )
    if action == Kind.RELABEL:
        return items_relabel(
            project=project, user=user, selection=selection, note=note, progress=progress
        )
    if action == Kind.ASSIGN:
        return items_assign(
            project=project, user=user, selection=selection, users=users, progress=progress
        )
    if action == Kind.DELETE:
        return items_delete_recorded(
            project=project, user=user, selection=selection, progress=progress
        )
    raise ValidationError(
        {"action": f"Unknown action {action!r}; one of review, relabel, assign, delete."}
    )


def annotators_named(project: Project, names: Iterable[str]) -> list[AbstractBaseUser]:
    """Members of `project` by username, for the assign action; any other name is refused."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    wanted = sorted({n.strip() for n in names if n and n.strip()})
    if not wanted:
        raise ValidationError({"users": "Name at least one annotator."})
    found = list(
        User.objects.filter(
            **{f"{User.USERNAME_FIELD}__in": wanted},
            memberships__project=project,
            memberships__role__in=access.ANNOTATE,
        )
    )
    missing = sorted(set(wanted) - {u.get_username() for u in found})
    if missing:
        raise ValidationError({"users": f"Not annotators of this project: {', '.join(missing)}."})
    return found
