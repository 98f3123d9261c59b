"""Writes and workflows on projects and annotations. Views, the API, consumers and management
commands all call these; none of them writes annotations another way."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import (
    CASCADE,
    Case,
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotations import queue, rows
from annotations.assignments import required_answers
from annotations.events import publish_answer_on_commit
from annotations.flags import relabel_arrived, relabels_complete
from annotations.gold import gold_rebuild, gold_refresh, gold_refresh_item
from annotations.label_classes import class_names_locked
from annotations.locks import project_write_lock
from annotations.models import (
    PINNED_PRIORITY,
    Annotation,
    AnnotationRevision,
    ClassNames,
    GoldLabel,
    Item,
    ItemAssignment,
    ItemLease,
    Project,
    Review,
    ReviewEvent,
)
from annotations.project_setup import project_create  # noqa: F401 (re-exported for callers)
from annotations.webhooks.events import annotation_data, item_completed_data, webhook_event
from annotations.webhooks.models import WebhookEvent
from curation.duplicate_groups import duplicate_groups_of, duplicate_groups_recount
from curation.models import models_dir
from curation.version_models import versions_dir

logger = logging.getLogger(__name__)


class SubmissionRefused(ValidationError):
    """A new answer the queue did not hand to this annotator, or for an item that needs no more
    answers. Nothing was stored; the page and the API answer 409 (Conflict) with the message."""


@dataclass(frozen=True)
class SubmitResult:
    annotation: Annotation
    created: bool  # a new answer
    changed: bool  # False when the submission was a resend of one already stored


def validate_labels(
    project: Project,
    labels: Sequence[str],
    *,
    skipped: bool,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Check chosen labels against the project's classes (`names`, from
    `Project.class_names()`, when the caller has read them already); returns them in schema
    order. Retired classes are refused: they stay in the data, not in new answers."""
    if not isinstance(labels, list | tuple) or not all(isinstance(x, str) for x in labels):
        raise ValidationError({"labels": "Labels must be a list of class names."})
    if not isinstance(names, ClassNames):
        names = project.class_names()
    unknown = [x for x in labels if x not in names]
    if unknown:
        raise ValidationError(
            {
                "labels": f"Unknown label(s) {', '.join(map(repr, unknown))}; "
                f"this project's classes are {', '.join(map(repr, names.offered))}."
            }
        )
    retired = [x for x in labels if x in names.retired]
    if retired:
        raise ValidationError(
            {
                "labels": f"The class(es) {', '.join(map(repr, retired))} are retired: choose "
                f"one of {', '.join(map(repr, names.offered))}."
            }
        )
    if len(set(labels)) != len(labels):
        raise ValidationError({"labels": "A label was given twice."})
    if skipped:
        if labels:
            raise ValidationError({"labels": "A skipped item carries no labels."})
        return []
    if not project.is_multi_label and len(labels) != 1:
        raise ValidationError({"labels": "Choose exactly one label (single-label project)."})
    return [n for n in names if n in labels]


def annotation_submit(
    *,
    item: Item,
    annotator,
    labels: Sequence[str],
    skipped: bool = False,
    time_spent_ms: int = 0,
    client_uuid: uuid.UUID,
    label_names: Sequence[str] | None = None,
) -> SubmitResult:
    """Store an annotator's answer for an item, exactly once per `client_uuid`.

    A resent submission returns what is stored and changes nothing (also after the first one
    released the lease). A new answer for an item the annotator already answered (reopened from
    the history) edits it and logs a revision. Any other answer must have been handed out by the
    queue (`_check_handed_out`), else `SubmissionRefused`. The item row is locked for the write,
    so concurrent resends cannot create two rows and the completion counters stay exact.
    """
    project = item.project
    # Not list(labels): that would split a bare string into letters instead of refusing it.
    # Checked here when the caller has the names, else only under the lock below (one read).
    if label_names is not None:
        labels = validate_labels(project, labels, skipped=skipped, names=label_names)
    time_spent_ms = max(0, min(int(time_spent_ms or 0), 24 * 3600 * 1000))
    with transaction.atomic():
        # The project's write lock before the item (`annotations.locks`), and the schema lock:
        # the labels are checked again under it, so a class renamed since the first check is
        # refused here rather than stored under its old name after the rename rewrote the others.
        label_names = class_names_locked(project, write_lock=True)
        labels = validate_labels(project, labels, skipped=skipped, names=label_names)
        # The item's review and gold row come with the lock: the gold label is refreshed below.
        # And the project's settings, read now: an overlap changed since the caller loaded the
        # project has committed by the time the write lock is ours. An item of another project
        # raises Item.DoesNotExist (the page's view answers 404 without reading the item first).
        locked = _lock_item(item.pk, item.project_id)
        project = locked.project
        replay, existing, others = _find_submission(client_uuid, locked, annotator)
        if replay is not None:
            if replay.item_id != locked.pk or replay.annotator_id != annotator.pk:
                raise ValidationError({"client_uuid": "This submission id was already used."})
            return SubmitResult(annotation=replay, created=False, changed=False)
        if existing is None:
            _check_handed_out(project, locked, annotator)
        elif existing.skipped and not skipped and not locked.needs_annotation:
            # Turning a skip into an answer adds an answer: not past the overlap.
            raise SubmissionRefused(
                {"item": "This item got all the answers it needs since you skipped it."}
            )

        if existing is None:
            annotation = Annotation(
                project=project,
                item=locked,
                annotator=annotator,
                labels=labels,
                skipped=skipped,
                time_spent_ms=time_spent_ms,
                client_uuid=client_uuid,
            )
            rows.insert(annotation)  # Annotation.objects.create, in plain SQL
            delta = 0 if skipped else 1
            created = True
        else:
            AnnotationRevision.objects.create(
                annotation=existing,
                client_uuid=client_uuid,
                labels=labels,
                skipped=skipped,
                previous_labels=existing.labels,
                previous_skipped=existing.skipped,
            )
            delta = int(existing.skipped) - int(skipped)
            existing.labels = labels
            existing.skipped = skipped
            existing.time_spent_ms = min(existing.time_spent_ms + time_spent_ms, 2**31 - 1)
            existing.save(update_fields=["labels", "skipped", "time_spent_ms", "updated_at"])
            annotation = existing
            created = False
        count = locked.annotation_count + delta
        still_open = count < locked.answers_wanted(project) if delta else locked.needs_annotation
        completes = locked.needs_annotation and not still_open
        answers = [a.labels for a in others if not a.skipped]
        if not skipped:
            answers.append(labels)
        # An item sent back for relabelling keeps its gold label until its new answers are in
        # (`bulk.items_relabel`); the submission that brings the last one sends it to review.
        relabelling = locked.relabel_answers > 0
        if not (relabelling and still_open):
            gold_refresh_item(
                project,
                locked,
                answers=answers,
                complete=not still_open,
                classes=label_names,
            )
        if relabelling and completes:
            relabel_arrived(project, locked.pk)
        queue.release_lease(item=locked, user=annotator, complete=not still_open)
        # The webhook outbox, in this transaction; no query unless a hook listens.
        webhook_event(
            project,
            WebhookEvent.ANNOTATION_SAVED,
            lambda: annotation_data(annotation, locked, annotator, created=created),
        )
        # Last: a completed item moves the project's counter, whose row every submission of
        # the project then waits for until this transaction commits.
        progress = _count_answer(project, locked, count, still_open) if delta else None
        if progress is not None and not still_open:
            webhook_event(
                project,
                WebhookEvent.ITEM_COMPLETED,
                lambda: item_completed_data(locked, answers=answers, progress=progress),
            )
        # The pages' progress, and the model in the loop learns from this answer, once it is
        # committed.
        publish_answer_on_commit(project.pk, locked.pk, counts=progress)
    return SubmitResult(annotation=annotation, created=created, changed=True)


def _lock_item(item_id: int, project_id: int) -> Item:
    """The item locked, with its project, review and gold row loaded (what
    `select_for_update(of=("self",)).select_related("review", "gold", "project")` reads), in
    plain SQL (`annotations.rows`); Item.DoesNotExist if it is not the project's."""
    quote = connection.ops.quote_name
    item_t, project_t, review_t, gold_t = (
        quote(m._meta.db_table) for m in (Item, Project, Review, GoldLabel)
    )
    lock = " FOR UPDATE OF i" if connection.features.has_select_for_update_of else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {rows.columns(Item, 'i')}, {rows.columns(Project, 'p')}, "
            f"{rows.columns(Review, 'r')}, {rows.columns(GoldLabel, 'g')} FROM {item_t} i "
            f"JOIN {project_t} p ON p.id = i.project_id "
            f"LEFT JOIN {review_t} r ON r.item_id = i.id "
            f"LEFT JOIN {gold_t} g ON g.item_id = i.id "
            f"WHERE i.id = %s AND i.project_id = %s{lock}",
            [item_id, project_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Item.DoesNotExist("No such item in this project.")
    cut = list(itertools.accumulate(rows.width(m) for m in (Item, Project, Review, GoldLabel)))
    item = rows.instance(Item, row[: cut[0]])
    project = rows.instance(Project, row[cut[0] : cut[1]])
    review = rows.instance(Review, row[cut[1] : cut[2]])
    gold = rows.instance(GoldLabel, row[cut[2] :])
    Item.project.field.set_cached_value(item, project)
    Item.review.related.set_cached_value(item, review)
    Item.gold.related.set_cached_value(item, gold)
    for related in (review, gold):
        if related is not None:
            type(related).item.field.set_cached_value(related, item)
    return item


def _check_handed_out(project: Project, item: Item, annotator) -> None:
    """Refuse a first answer to `item` (locked) that the queue did not hand to `annotator`.

    Accepted: an assignee of an assigned item; else, on an item that still needs answers, the
    holder of a live lease, or of an expired one while the slot it reserved is still free (no
    one else took the item over meanwhile: answering then is what leasing it again and answering
    would do, and a laptop that slept through its lease does not lose the work). Refused: items
    never handed to them, items held by others, and items that have all their answers.
    """
    if item.required_answers is not None:
        if not ItemAssignment.objects.filter(item=item, user=annotator).exists():
            raise SubmissionRefused(
                {"item": "This item is assigned to named annotators, and you are not one of them."}
            )
        return  # an assignee who has not answered: the item is open for them
    if not item.needs_annotation:
        raise SubmissionRefused(
            {"item": "This item already has all the answers it needs; yours was not stored."}
        )
    now = timezone.now()
    mine_until = None
    others_live = 0
    for user_id, expires_at in ItemLease.objects.filter(item=item).values_list(
        "user_id", "expires_at"
    ):
        if user_id == annotator.pk:
            mine_until = expires_at
        elif expires_at > now:
            others_live += 1
    if mine_until is None:
        raise SubmissionRefused(
            {"item": "This item was not handed to you by the queue; answer the items it gives you."}
        )
    if mine_until <= now and others_live >= item.answers_wanted(project) - item.annotation_count:
        raise SubmissionRefused(
            {"item": "Your hold on this item expired and another annotator has it now."}
        )


def _find_submission(
    client_uuid: uuid.UUID, item: Item, annotator
) -> tuple[Annotation | None, Annotation | None, list[Annotation]]:
    """(the answer already stored under `client_uuid`, directly or through an edit; the
    annotator's current answer to `item`; the other annotators' answers to `item`, for its gold
    label), in one query, as this runs on every submission. The edit is looked up as a scalar
    subquery so PostgreSQL ORs three index lookups. Plain SQL: building this OR with the ORM
    cost 7% of a submission's CPU (benchmarks/README.md, "Profile")."""
    answer, revision = (
        connection.ops.quote_name(m._meta.db_table) for m in (Annotation, AnnotationRevision)
    )
    resend = (
        f"(a.client_uuid = %s OR a.id = (SELECT r.annotation_id FROM {revision} r "
        "WHERE r.client_uuid = %s LIMIT 1))"
    )
    # What the ORM would send, whatever the caller passed: a UUID on PostgreSQL, hex text on
    # SQLite (whose driver cannot bind a UUID).
    uid = Annotation._meta.get_field("client_uuid").get_db_prep_value(
        uuid.UUID(str(client_uuid)), connection
    )
    rows = list(
        Annotation.objects.raw(
            f"SELECT a.*, {resend} AS _resend FROM {answer} a WHERE {resend} OR a.item_id = %s",
            [uid, uid, uid, uid, item.pk],
        )
    )
    replay = next((a for a in rows if a._resend), None)
    existing = next(
        (a for a in rows if a.item_id == item.pk and a.annotator_id == annotator.pk), None
    )
    others = [a for a in rows if a.item_id == item.pk and a.annotator_id != annotator.pk]
    return replay, existing, others


def _count_answer(
    project: Project, item: Item, count: int, now_open: bool
) -> tuple[int, int] | None:
    """Write the (locked) item's new answer `count` and whether it is `now_open`, and move the
    project's counters if the item opened or closed; returns the project's (total, complete)
    counts when they moved (read in the same statement, for the progress event).

    The caller's last statement before its commit: under a team labelling at full speed the
    project's row was held from here through the gold label, the lease and the commit, and
    ~11 of 50 submissions at any moment waited for it (pg_stat_activity, `benchmarks/load.py`).
    """
    was_open = item.needs_annotation
    if was_open == now_open:
        Item.objects.filter(pk=item.pk).update(annotation_count=count, needs_annotation=now_open)
        return None
    # Both rows in one statement (it runs on most submissions); the project's row is locked
    # only when its count moves, as before.
    item_table, project_table = (
        connection.ops.quote_name(m._meta.db_table) for m in (Item, Project)
    )
    moved = 1 if was_open else -1
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH i AS (UPDATE {item_table} SET annotation_count = %s, needs_annotation = "
                f"%s WHERE id = %s) UPDATE {project_table} SET complete_count = complete_count "
                "+ %s WHERE id = %s RETURNING item_count, complete_count",
                [count, now_open, item.pk, moved, project.pk],
            )
        else:  # SQLite (the embedded demo) has no data-modifying WITH: two statements
            Item.objects.filter(pk=item.pk).update(
                annotation_count=count, needs_annotation=now_open
            )
            cursor.execute(
                f"UPDATE {project_table} SET complete_count = complete_count + %s "
                "WHERE id = %s RETURNING item_count, complete_count",
                [moved, project.pk],
            )
        total, complete = cursor.fetchone()
    return total, complete


def project_recount(project: Project) -> Project:
    """Recompute every item's answer count and the project's progress from the annotations.

    Used after deletions in admin and when the overlap changes; exact, a few set-wise UPDATEs.
    """
    with transaction.atomic():
        project_write_lock(project.pk, exclusive=True)  # no submission in flight meanwhile
        project = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        items = Item.objects.filter(project=project)
        _recount_items(project, items)
        _recount_progress(project)
        gold_rebuild(project)
        # Items waiting for new answers that the recount found complete (a lowered overlap):
        # their relabelling ends as a completing submission would end it, not pending forever.
        relabels_complete(
            project,
            items.filter(needs_annotation=False, relabels__completed_at__isnull=True)
            .distinct()
            .values_list("pk", flat=True),
        )
    project.refresh_from_db()
    return project


def items_recount(project: Project, item_ids: Iterable[int]) -> None:
    """`project_recount` for these items only: their answer counts, completeness and gold
    labels, and the project's progress. For answers added outside the queue to items no one
    else has touched (an import's new items), so a big project is not re-read whole."""
    ids = sorted(set(item_ids))
    with transaction.atomic():
        project_write_lock(project.pk, exclusive=True)
        project = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
        for start in range(0, len(ids), 5000):
            _recount_items(
                project, Item.objects.filter(project=project, pk__in=ids[start : start + 5000])
            )
        _recount_progress(project)
        gold_refresh(project, ids)


def _recount_items(project: Project, items: QuerySet[Item]) -> None:
    """Set `items`' answer counts and completeness from their answers."""
    answered = (
        Annotation.objects.filter(item=OuterRef("pk"), skipped=False)
        .order_by()
        .values("item")
        .annotate(n=Count("id"))
        .values("n")
    )
    items.update(
        annotation_count=Coalesce(Subquery(answered, output_field=IntegerField()), Value(0))
    )
    # Assigned items: their targets follow the answers too (an answer of a non-assignee
    # deleted or turned into a skip lowers it).
    items.filter(required_answers__isnull=False).update(required_answers=required_answers())
    items.update(
        needs_annotation=Case(
            When(
                annotation_count__lt=Coalesce(F("required_answers"), Value(project.overlap))
                + F("relabel_answers"),
                then=Value(True),
            ),
            default=Value(False),
        )
    )


def _recount_progress(project: Project) -> None:
    """The project's item and complete counts, from its items."""
    totals = Item.objects.filter(project=project).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(needs_annotation=False))
    )
    Project.objects.filter(pk=project.pk).update(
        item_count=totals["total"], complete_count=totals["complete"]
    )


def project_set_overlap(project: Project, overlap: int) -> Project:
    if overlap < 1:
        raise ValidationError({"overlap": "Overlap is at least 1."})
    with transaction.atomic():
        # Project first, then its items (`project_recount`), as every writer: `annotations.locks`.
        project_write_lock(project.pk, exclusive=True)
        Project.objects.filter(pk=project.pk).update(overlap=overlap)
        project.overlap = overlap
        return project_recount(project)


def add_items_counted(project: Project, created: int) -> None:
    """Record `created` new (open) items in the project's counters."""
    Project.objects.filter(pk=project.pk).update(item_count=F("item_count") + created)


def projects_recount(project_ids: Iterable[int]) -> None:
    """`project_recount` for each of these projects."""
    for project in Project.objects.filter(pk__in=set(project_ids)):
        project_recount(project)


def _delete_items_bottom_up(items: QuerySet[Item]) -> None:
    """One DELETE per table. Django's collector would load every row and its dependents into
    memory first, which does not finish for a project of a million items; nothing listens to
    delete signals for these models, so the set-wise delete does the same. The items' image
    files are removed once the deletion commits (`_delete_files_on_commit`)."""
    _delete_files_on_commit(
        images=list(items.exclude(image="").values_list("image", flat=True).iterator())
    )
    AnnotationRevision.objects.filter(annotation__item__in=items).delete()
    ReviewEvent.objects.filter(review__item__in=items).delete()
    # Every row that points at an item (leases, answers, reviews, relabelling requests, the
    # analyses' rows…), read from the model graph so a new one is never forgotten: Django's
    # CASCADE is not in the database, and a forgotten one fails the deletion at commit.
    for relation in Item._meta.related_objects:
        if relation.on_delete is not CASCADE:
            continue
        model = relation.related_model
        rows = model._base_manager.filter(**{f"{relation.field.name}__in": items})
        rows._raw_delete(rows.db)
    items._raw_delete(items.db)


def items_delete(items: QuerySet[Item]) -> None:
    """Delete items with their annotations, edits and leases; the projects' progress follows,
    and so do the duplicate groups they were in (recounted, dropped when one member is left)."""
    with transaction.atomic():
        project_ids = set(items.order_by().values_list("project_id", flat=True).distinct())
        for project_id in sorted(project_ids):
            project_write_lock(project_id, exclusive=True)
        groups = duplicate_groups_of(items)
        _delete_items_bottom_up(Item.objects.filter(pk__in=items.values("pk")))
        duplicate_groups_recount(groups)
        projects_recount(project_ids)


def annotations_delete(annotations: QuerySet[Annotation]) -> None:
    """Delete answers; the items go back to the queue when they need more answers again."""
    with transaction.atomic():
        project_ids = set(annotations.order_by().values_list("project_id", flat=True).distinct())
        for project_id in sorted(project_ids):
            project_write_lock(project_id, exclusive=True)
        annotations.delete()
        projects_recount(project_ids)


def projects_delete(projects: QuerySet[Project]) -> None:
    """Delete projects with everything they hold, and their image, model and dataset version
    files once that commits."""
    with transaction.atomic():
        ids = list(projects.values_list("pk", flat=True))
        _delete_items_bottom_up(Item.objects.filter(project__in=ids))
        Project.objects.filter(pk__in=ids).delete()
        _delete_files_on_commit(
            model_folders=[
                folder
                for pk in ids
                for folder in (models_dir() / f"project-{pk}", versions_dir() / f"project-{pk}")
            ]
        )


def _delete_files_on_commit(
    *, images: Sequence[str] = (), model_folders: Sequence[Path] = ()
) -> None:
    """Remove files of deleted rows after the deletion commits: never before (a rollback would
    leave rows pointing at missing files), and never for a deletion that rolled back."""
    if not images and not model_folders:
        return

    def delete() -> None:
        storage = Item._meta.get_field("image").storage
        for name in images:
            try:
                storage.delete(name)
            except OSError:
                logger.warning("could not delete the image file %s", name, exc_info=True)
        for folder in model_folders:
            # Imported here: the model machinery stays out of the web processes until needed.
            from curation import artifacts

            artifacts.delete_project_models(folder)

    transaction.on_commit(delete)


def items_move_to_front(items: QuerySet[Item]) -> int:
    """Pin items at the head of their projects' queues, ahead of what the model ranks (it
    re-ranks only priorities below `PINNED_PRIORITY`), newest pin first; returns how many."""
    moved = 0
    with transaction.atomic():
        for project_id in set(items.order_by().values_list("project_id", flat=True).distinct()):
            top = (
                Item.objects.filter(project_id=project_id, needs_annotation=True)
                .order_by("-priority")
                .values_list("priority", flat=True)
                .first()
            )
            priority = max(top or 0.0, PINNED_PRIORITY) + 1.0
            moved += items.filter(project_id=project_id).update(priority=priority)
    return moved
