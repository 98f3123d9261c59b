"""A project's label classes: add, rename, recolour, re-key, reorder, retire, restore, delete.

Answers, their edits, gold labels, reviews and their log, the evaluation slice and the model's
history store class *names* (they are exported as such). So a rename rewrites every stored name
in the same transaction as the class row, and the model is retrained from scratch: its file
knows the old names, so it stops being the current model until the retraining the rename
requests has run. A class that any stored answer, decision or prediction uses cannot be deleted
(that would orphan the data); it is retired instead: kept in the data, exports and training,
no longer offered on the annotate and review pages, refused in new answers.

The item kind and the labelling mode are the schema too: they are frozen once the project has
items (answers of one mode do not mean anything in the other).

Class edits of a project are serialised by locking its label class rows; the project's training
row is locked as well, so a training run in progress finishes before the names change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max, Q, QuerySet
from django.db.models.expressions import RawSQL

from annotations.locks import project_write_lock
from annotations.models import (
    Annotation,
    AnnotationRevision,
    ClassNames,
    GoldLabel,
    Item,
    LabelClass,
    Project,
    Review,
    ReviewEvent,
)
from curation.models import EvalSample, ModelVersion, ProjectTraining
from curation.training_requests import request_training_on_commit

PALETTE = (
    "#4f7cff",
    "#e8590c",
    "#2f9e44",
    "#c2255c",
    "#7048e8",
    "#0c8599",
    "#e67700",
    "#5c940d",
    "#862e9c",
    "#495057",
)

_FROZEN = (
    "This project has items: its item kind and labelling mode can no longer change "
    "(create a new project for another kind of data or mode)."
)


# --- Where class names are stored ----------------------------------------------------------


def _name_columns(project: Project) -> list[tuple[QuerySet, tuple[str, ...], str]]:
    """Every JSON list of class names stored for `project`: (rows, their list fields, what the
    rows are). The review log's `candidates` (a list of dicts) is handled on its own."""
    return [
        (Annotation.objects.filter(project=project), ("labels",), "answers"),
        (
            AnnotationRevision.objects.filter(annotation__project=project),
            ("labels", "previous_labels"),
            "answer edits",
        ),
        (GoldLabel.objects.filter(project=project), ("labels",), "gold labels"),
        (Review.objects.filter(project=project), ("labels", "model_labels"), "reviews"),
        (ReviewEvent.objects.filter(review__project=project), ("labels",), "review log entries"),
        (EvalSample.objects.filter(project=project), ("predicted", "truth"), "evaluation samples"),
    ]


def _containing(rows: QuerySet, fields: Sequence[str], name: str) -> QuerySet:
    """The rows where any of the list `fields` holds `name`. PostgreSQL answers from the JSON
    (`@>`); other databases (SQLite, the demo) by reading the lists."""
    if connection.vendor == "postgresql":
        match = Q()
        for field in fields:
            match |= Q(**{f"{field}__contains": [name]})
        return rows.filter(match)
    ids = [
        pk
        for pk, *values in rows.values_list("pk", *fields)
        if any(name in (v or []) for v in values)
    ]
    return rows.filter(pk__in=ids)


def label_class_usage(label_class: LabelClass) -> dict[str, int]:
    """Where the class's name is stored: {what: rows}, only what is non-zero."""
    project, name = label_class.project, label_class.name
    out = {}
    for rows, fields, what in _name_columns(project):
        if rows.model is ReviewEvent:  # the candidates the reviewer saw count too
            ids = set(_containing(rows, fields, name).values_list("pk", flat=True))
            n = len(ids | {e.pk for e in _events_with_candidate(project, name)})
        else:
            n = _containing(rows, fields, name).count()
        if n:
            out[what] = n
    return out


def _events_with_candidate(project: Project, name: str) -> list[ReviewEvent]:
    """Review events whose recorded candidates (the answers the reviewer saw) use `name`."""
    events = ReviewEvent.objects.filter(review__project=project).exclude(candidates=[])
    return [
        e
        for e in events.only("pk", "candidates")
        if any(name in (c.get("labels") or []) for c in e.candidates if isinstance(c, dict))
    ]


def _rewrite(project: Project, old: str, new: str) -> int:
    """Replace `old` by `new` in every stored list of class names of `project`; returns rows."""
    changed = 0
    columns = [(rows, field) for rows, fields, _ in _name_columns(project) for field in fields]
    for rows, field in columns:
        matching = _containing(rows, [field], old)
        if connection.vendor == "postgresql":
            # Element by element, in place: the lists keep their order and any other names.
            column = connection.ops.quote_name(field)
            expression = RawSQL(
                f"(SELECT jsonb_agg(CASE WHEN x.e = to_jsonb(%s::text) THEN to_jsonb(%s::text) "
                f"ELSE x.e END ORDER BY x.n) FROM jsonb_array_elements({column}) "
                f"WITH ORDINALITY AS x(e, n))",
                [old, new],
            )
            changed += matching.update(**{field: expression})
        else:
            for obj in matching.only("pk", field):
                setattr(obj, field, [new if v == old else v for v in getattr(obj, field)])
                obj.save(update_fields=[field])
                changed += 1
    for event in _events_with_candidate(project, old):
        for c in event.candidates:
            if isinstance(c, dict) and isinstance(c.get("labels"), list):
                c["labels"] = [new if v == old else v for v in c["labels"]]
        event.save(update_fields=["candidates"])
        changed += 1
    for version in ModelVersion.objects.filter(project=project):
        balance = _renamed_keys(version.class_balance, old, new)
        metrics = dict(version.metrics or {})
        if isinstance(metrics.get("class_balance"), dict):
            metrics["class_balance"] = _renamed_keys(metrics["class_balance"], old, new)
        if balance != version.class_balance or metrics != version.metrics:
            version.class_balance, version.metrics = balance, metrics
            version.save(update_fields=["class_balance", "metrics"])
    return changed


def _rename_in_training(training: ProjectTraining, old: str, new: str) -> None:
    """The last weighted consensus names each annotator's worst class."""
    rows = training.annotator_quality or []
    renamed = [
        {**r, "worst_class": new} if isinstance(r, dict) and r.get("worst_class") == old else r
        for r in rows
    ]
    if renamed != rows:
        training.annotator_quality = renamed
        training.save(update_fields=["annotator_quality"])


def _renamed_keys(mapping: Any, old: str, new: str) -> Any:
    if not isinstance(mapping, dict):
        return mapping
    return {(new if k == old else k): v for k, v in mapping.items()}


# --- Locks and the model -------------------------------------------------------------------

# First key of the PostgreSQL advisory locks on a project's class names (the second is its id).
_SCHEMA_LOCK = 0x6C61_6263  # "labc"


def _schema_lock(project_id: int, *, shared: bool) -> None:
    """Writers of class names (answers, decisions) hold this shared; a class change holds it
    exclusively, so an answer checked against the old names cannot commit after a rename
    rewrote them. SQLite needs none: it refuses a write from a transaction that read before
    another one committed."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s, %s)", [_SCHEMA_LOCK, project_id])


def class_names_locked(project: Project, *, write_lock: bool = False) -> ClassNames:
    """The project's class names, read inside the caller's transaction under the shared schema
    lock: the labels of an answer or decision checked against these are still the project's
    names when it commits (a rename waits for it, or it waits for the rename).

    `write_lock`: take the project's shared write lock first (`annotations.locks`), in the same
    statement as the schema lock. The names are read by a later statement either way: its
    snapshot is taken once both locks are held, so it sees a rename that committed meanwhile."""
    if not connection.in_atomic_block:
        raise RuntimeError("class_names_locked() is for use inside a transaction")
    if write_lock:
        project_write_lock(project.pk, exclusive=False, then_shared=(_SCHEMA_LOCK,))
    else:
        _schema_lock(project.pk, shared=True)
    return project.class_names()


def _lock(project: Project) -> ProjectTraining:
    """Lock the project's class names against answers being written, its label classes (one
    class edit at a time) and its training row (a training run in progress finishes first);
    returns the training row."""
    # The project's write lock first, as every writer takes it (`annotations.locks`): a rename
    # rewrites answers and gold labels, which recounts and submissions also lock.
    project_write_lock(project.pk, exclusive=True)
    _schema_lock(project.pk, shared=False)
    list(LabelClass.objects.select_for_update().filter(project=project).values_list("pk"))
    ProjectTraining.objects.get_or_create(project=project)
    return ProjectTraining.objects.select_for_update().get(project=project)


def _schema_changed(training: ProjectTraining, *, drop_model: bool) -> None:
    """The classes changed: the model retrains from scratch on commit. `drop_model`: its names
    are wrong now (a rename), so it stops being the current model until then."""
    fields = ["labels_until", "labels_seen"]
    training.labels_until = None  # "stale": the sweep retrains it even if the request is lost
    training.labels_seen = 0
    if drop_model:
        training.current_version = None
        fields.append("current_version")
    training.save(update_fields=fields)
    request_training_on_commit(training.project_id)


def _reread(label_class: LabelClass) -> LabelClass:
    current = LabelClass.objects.filter(pk=label_class.pk).select_related("project").first()
    if current is None:
        raise ValidationError("This label class no longer exists.")
    return current


def _check(label_class: LabelClass) -> None:
    """Field validation (name, colour, key) and the per-project uniqueness, as messages."""
    label_class.name = (label_class.name or "").strip()
    if not label_class.name:
        raise ValidationError({"name": "A label class needs a name."})
    # The per-project uniqueness first, on the field it is about: the constraints' own
    # messages name no field ("Constraint ... is violated" for the key).
    others = LabelClass.objects.filter(project_id=label_class.project_id).exclude(pk=label_class.pk)
    if others.filter(name=label_class.name).exists():
        raise ValidationError(
            {"name": f"A class named {label_class.name!r} already exists in this project."}
        )
    if label_class.key and (taken := others.filter(key=label_class.key).first()):
        raise ValidationError(
            {"key": f"The key {label_class.key!r} is already used by the class {taken.name!r}."}
        )
    label_class.full_clean()


# --- The services --------------------------------------------------------------------------


def label_class_add(*, project: Project, name: str, color: str = "", key: str = "") -> LabelClass:
    """A new class at the end of the schema (a palette colour unless one is given)."""
    with transaction.atomic():
        training = _lock(project)
        count = LabelClass.objects.filter(project=project).count()
        top = LabelClass.objects.filter(project=project).aggregate(m=Max("order"))["m"]
        label_class = LabelClass(
            project=project,
            name=name,
            color=color or PALETTE[count % len(PALETTE)],
            key=(key or "").strip().lower(),
            order=0 if top is None else top + 1,
        )
        _check(label_class)
        label_class.save()
        _schema_changed(training, drop_model=False)
    return label_class


def label_class_update(
    *,
    label_class: LabelClass,
    name: str | None = None,
    color: str | None = None,
    key: str | None = None,
) -> list[str]:
    """Change a class's name, colour or key; returns what changed. A new name is written into
    every answer, gold label, review, log entry and prediction that used the old one."""
    with transaction.atomic():
        training = _lock(label_class.project)
        current = _reread(label_class)
        old_name = current.name
        if name is not None:
            current.name = name.strip()
        if color is not None:
            current.color = color
        if key is not None:
            current.key = key.strip().lower()
        _check(current)
        stored = LabelClass.objects.get(pk=current.pk)
        changed = [f for f in ("name", "color", "key") if getattr(current, f) != getattr(stored, f)]
        if not changed:
            return []
        current.save(update_fields=changed)
        if "name" in changed:
            _rewrite(current.project, old_name, current.name)
            _rename_in_training(training, old_name, current.name)
            _schema_changed(training, drop_model=True)
    label_class.refresh_from_db()
    return changed


def label_classes_reorder(*, project: Project, ids: Sequence[int]) -> None:
    """Put the project's classes in the order of `ids` (every class exactly once)."""
    with transaction.atomic():
        training = _lock(project)
        current = list(LabelClass.objects.filter(project=project).order_by("order", "id"))
        if sorted(ids) != sorted(c.pk for c in current) or len(set(ids)) != len(ids):
            raise ValidationError("Give every label class of the project exactly once.")
        by_id = {c.pk: c for c in current}
        moved = []
        for order, pk in enumerate(ids):
            if by_id[pk].order != order:
                by_id[pk].order = order
                moved.append(by_id[pk])
        if not moved:
            return
        LabelClass.objects.bulk_update(moved, ["order"])
        _schema_changed(training, drop_model=False)


def label_class_move(*, label_class: LabelClass, offset: int) -> None:
    """Move a class `offset` places up (negative) or down the schema."""
    ids = list(
        LabelClass.objects.filter(project=label_class.project)
        .order_by("order", "id")
        .values_list("pk", flat=True)
    )
    if label_class.pk not in ids:
        raise ValidationError("This label class no longer exists.")
    at = ids.index(label_class.pk)
    to = max(0, min(len(ids) - 1, at + offset))
    ids.insert(to, ids.pop(at))
    label_classes_reorder(project=label_class.project, ids=ids)


def label_class_move_to(*, label_class: LabelClass, position: int) -> None:
    """Put a class at `position` (0 first) in the schema."""
    ids = list(
        LabelClass.objects.filter(project=label_class.project)
        .order_by("order", "id")
        .values_list("pk", flat=True)
    )
    if label_class.pk not in ids:
        raise ValidationError("This label class no longer exists.")
    if not 0 <= position < len(ids):
        raise ValidationError(
            {
                "order": f"The position must be from 0 to {len(ids) - 1} (this project has "
                f"{len(ids)} classes)."
            }
        )
    ids.remove(label_class.pk)
    ids.insert(position, label_class.pk)
    label_classes_reorder(project=label_class.project, ids=ids)


def label_class_change(
    *,
    label_class: LabelClass,
    name: str | None = None,
    color: str | None = None,
    key: str | None = None,
    position: int | None = None,
    retired: bool | None = None,
) -> list[str]:
    """Any of a class's edits at once (the API's PATCH), all or nothing; returns what changed
    among name, color, key, order and retired."""
    with transaction.atomic():
        changed = label_class_update(label_class=label_class, name=name, color=color, key=key)
        if position is not None:
            before = label_class.order
            label_class_move_to(label_class=label_class, position=position)
            label_class.refresh_from_db(fields=["order"])
            if label_class.order != before:
                changed.append("order")
        if retired is not None and label_class_set_retired(
            label_class=label_class, retired=retired
        ):
            changed.append("retired")
    return changed


def label_class_set_retired(*, label_class: LabelClass, retired: bool) -> bool:
    """Retire a class (kept in the data, no longer offered) or restore it; returns whether it
    changed. The last offered class cannot be retired: annotators need something to choose."""
    with transaction.atomic():
        _lock(label_class.project)
        current = _reread(label_class)
        if current.retired == retired:
            return False
        if (
            retired
            and not LabelClass.objects.filter(project=current.project, retired=False)
            .exclude(pk=current.pk)
            .exists()
        ):
            raise ValidationError("A project needs at least one class annotators can choose.")
        current.retired = retired
        current.save(update_fields=["retired"])
    label_class.retired = retired
    return True


def label_class_delete(*, label_class: LabelClass) -> None:
    """Delete a class no stored data uses; a class in use is refused (retire it instead)."""
    with transaction.atomic():
        training = _lock(label_class.project)
        current = _reread(label_class)
        usage = label_class_usage(current)
        if usage:
            where = ", ".join(f"{n:,} {what}" for what, n in usage.items())
            raise ValidationError(
                f"The class {current.name!r} is in use ({where}): deleting it would lose that "
                f"data. Retire it instead: it stays in the data and exports and is no longer "
                f"offered for new answers."
            )
        if not LabelClass.objects.filter(project=current.project).exclude(pk=current.pk).exists():
            raise ValidationError("A project needs at least one label class.")
        current.delete()
        _schema_changed(training, drop_model=False)


def project_schema_check(project: Project, *, item_kind: str, labeling_mode: str) -> None:
    """Refuse a new item kind or labelling mode for a project that has items."""
    if project.pk is None:
        return
    stored = Project.objects.filter(pk=project.pk).values("item_kind", "labeling_mode").first()
    if stored is None:
        return
    if (stored["item_kind"], stored["labeling_mode"]) == (item_kind, labeling_mode):
        return
    if Item.objects.filter(project_id=project.pk).exists():
        field = "item_kind" if stored["item_kind"] != item_kind else "labeling_mode"
        raise ValidationError({field: _FROZEN})


def project_schema_set(*, project: Project, item_kind: str, labeling_mode: str) -> bool:
    """Change the item kind or labelling mode of a project that has no items yet."""
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        project_schema_check(locked, item_kind=item_kind, labeling_mode=labeling_mode)
        if (locked.item_kind, locked.labeling_mode) == (item_kind, labeling_mode):
            return False
        locked.item_kind, locked.labeling_mode = item_kind, labeling_mode
        locked.full_clean()
        locked.save(update_fields=["item_kind", "labeling_mode", "updated_at"])
    project.item_kind, project.labeling_mode = item_kind, labeling_mode
    return True
