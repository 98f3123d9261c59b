"""Export a project's labels as JSONL (one item a line, its annotations nested) or CSV (one
row per item and annotation).

An item that still waits for answers (fewer than the overlap, or than its assignees) is
`"status": "incomplete"`, and its gold label, unless a reviewer decided it, is no label with
source "incomplete": the answers so far are listed, but nothing about it is final yet.

Both are generators of text chunks that walk the items in id order a chunk at a time, with
each chunk's annotations, so a project of a million items streams in constant memory. The
download views and the `export_labels` command share them.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils.text import slugify

from annotations.gold import INCOMPLETE
from annotations.models import Annotation, GoldLabel, GoldSource, Item, Project

CHUNK_ITEMS = 1000
# Then "meta.<key>" for each metadata key of the project's items, in key order. The "text"
# column is "image" (the stored file's path) in image projects.
CSV_COLUMNS = (
    "item_id",
    "external_id",
    "text",
    "status",
    "gold_labels",
    "gold_source",
    "annotator",
    "labels",
    "skipped",
    "created_at",
    "updated_at",
)
COMPLETE = "complete"  # an item's status; else INCOMPLETE
FORMATS = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    # Other tools' formats (`annotations.exporters`).
    "labelstudio": "application/json; charset=utf-8",
    "doccano": "application/x-ndjson; charset=utf-8",
}
#: Formats for text projects only.
TEXT_ONLY = ("doccano",)
#: The file name's ending per format.
EXTENSIONS = {"labelstudio": "labelstudio.json", "doccano": "doccano.jsonl"}
# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """Neutralise spreadsheet formula injection: a cell that a spreadsheet would evaluate gets
    a leading single quote, which shows it as text."""
    return "'" + value if value.startswith(_FORMULA_START) else value


class ExportItem(NamedTuple):
    id: int
    external_id: str
    text: str
    image: str  # the stored file's name, for image projects
    metadata: Any
    complete: bool  # has all the answers it waits for
    answers: list[Answer]
    gold: Gold | None  # as exported: see `_exported_gold`


class Gold(NamedTuple):
    labels: list[str] | None  # None: no gold label yet (a tie waiting for review)
    source: str
    agreement: float | None


class Answer(NamedTuple):
    annotator: str
    labels: list[str]
    skipped: bool
    time_spent_ms: int
    created_at: datetime
    updated_at: datetime
    id: int = 0
    annotator_id: int = 0


def export_items(
    project: Project, *, chunk_size: int = CHUNK_ITEMS, items: QuerySet[Item] | None = None
) -> Iterator[ExportItem]:
    """The project's items (or those of `items`, a selection of them: the data browser's bulk
    export) in id order with their annotations (oldest first) and gold label.

    One query walks the items (a server-side cursor on PostgreSQL, read `chunk_size` rows at a
    time); each chunk's annotations come in one more query over the chunk's id range. Plain
    tuples rather than model instances: several times faster than `prefetch_related`, which
    matters at a million items.
    """
    username = f"annotator__{get_user_model().USERNAME_FIELD}"
    selected = items is not None
    rows_of = (items if selected else Item.objects.all()).filter(project=project)
    walk = (
        rows_of.order_by("id")
        .values_list("id", "external_id", "text", "image", "metadata", "needs_annotation")
        .iterator(chunk_size=chunk_size)
    )
    try:
        while rows := list(islice(walk, chunk_size)):
            yield from _with_answers(project, rows, username, by_id=selected)
    finally:
        walk.close()


def _with_answers(
    project: Project, rows: list[tuple], username: str, *, by_id: bool = False
) -> Iterator[ExportItem]:
    """Attach to a chunk of item rows (in id order) their annotations, fetched in one query:
    over the chunk's id range, or its ids (`by_id`) when the rows are a sparse selection."""
    first, last = rows[0][0], rows[-1][0]
    answers: dict[int, list[Answer]] = defaultdict(list)
    chunk = (
        Q(item_id__in=[row[0] for row in rows])
        if by_id
        else Q(item__project=project, item__id__range=(first, last))
    )
    for item_id, *values in (
        Annotation.objects.filter(chunk)
        .order_by("item_id", "created_at", "id")
        .values_list(
            "item_id",
            username,
            "labels",
            "skipped",
            "time_spent_ms",
            "created_at",
            "updated_at",
            "id",
            "annotator_id",
        )
    ):
        answers[item_id].append(Answer(*values))
    gold = {
        item_id: Gold(*values)
        for item_id, *values in GoldLabel.objects.filter(
            project=project, item_id__gte=first, item_id__lte=last
        ).values_list("item_id", "labels", "source", "agreement")
    }
    for item_id, external_id, text, image, metadata, needs_annotation in rows:
        complete = not needs_annotation
        yield ExportItem(
            item_id,
            external_id,
            text,
            image,
            metadata,
            complete,
            answers.get(item_id, []),
            _exported_gold(gold.get(item_id), complete=complete),
        )


def _exported_gold(gold: Gold | None, *, complete: bool) -> Gold | None:
    """An item still waiting for answers has no final label: the stored one (derived from the
    answers so far, e.g. "unanimous, agreement 1.0" after one answer) is exported as no label
    with source "incomplete". A reviewer's decision stands whatever the answers."""
    if gold is None or complete or gold.source == GoldSource.ADJUDICATED:
        return gold
    return Gold(None, INCOMPLETE, None)


def formats_for(project: Project) -> list[str]:
    """The export formats this project's items can be written in."""
    image = project.item_kind == Project.ItemKind.IMAGE
    return [f for f in FORMATS if not (image and f in TEXT_ONLY)]


def export_filename(project: Project, fmt: str) -> str:
    """A filename safe in any header or file system: ASCII slug, project id, format."""
    extension = EXTENSIONS.get(fmt, fmt)
    return f"{slugify(project.name)[:60] or 'project'}-{project.pk}-labels.{extension}"


def jsonl_chunks(
    project: Project, *, chunk_size: int = CHUNK_ITEMS, items: QuerySet[Item] | None = None
) -> Iterator[str]:
    """One JSON object a line: item_id, external_id, text (or image), metadata, status
    (complete or incomplete), gold (the final label: labels, source — adjudicated, unanimous,
    majority, consensus, tie, or incomplete while answers are missing — and agreement; null for
    an item nobody answered), annotations."""
    is_image = project.item_kind == Project.ItemKind.IMAGE
    lines: list[str] = []
    for item in export_items(project, chunk_size=chunk_size, items=items):
        record: dict = {"item_id": item.id, "external_id": item.external_id}
        if is_image:
            record["image"] = item.image
        else:
            record["text"] = item.text
        record["metadata"] = item.metadata
        record["status"] = COMPLETE if item.complete else INCOMPLETE
        record["gold"] = item.gold._asdict() if item.gold else None
        record["annotations"] = [
            {
                "annotator": a.annotator,
                "labels": a.labels,
                "skipped": a.skipped,
                "time_spent_ms": a.time_spent_ms,
                "created_at": a.created_at.isoformat(),
                "updated_at": a.updated_at.isoformat(),
            }
            for a in item.answers
        ]
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        if len(lines) >= chunk_size:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


def csv_chunks(
    project: Project, *, chunk_size: int = CHUNK_ITEMS, items: QuerySet[Item] | None = None
) -> Iterator[str]:
    """A header, then one row per (item, annotation), each with the item's text (or image
    path), status, gold label and metadata (a "meta.<key>" column per key); an item nobody
    labelled gets one row with an empty annotator. Labels are joined by "|", metadata values
    that are not text are written as JSON. Every user-controlled cell, the metadata column names
    too, is neutralised against formula injection."""
    is_image = project.item_kind == Project.ItemKind.IMAGE
    keys = metadata_keys(project)
    columns = ["image" if c == "text" and is_image else c for c in CSV_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*columns, *(safe_cell(f"meta.{key}") for key in keys)])
    for count, item in enumerate(export_items(project, chunk_size=chunk_size, items=items), 1):
        gold = item.gold
        head = [
            item.id,
            safe_cell(item.external_id),
            safe_cell(item.image if is_image else item.text),
            COMPLETE if item.complete else INCOMPLETE,
            safe_cell("|".join(gold.labels)) if gold and gold.labels is not None else "",
            gold.source if gold else "",
        ]
        metadata = item.metadata if isinstance(item.metadata, dict) else {}
        meta = [_meta_cell(metadata.get(key)) for key in keys]
        if not item.answers:
            writer.writerow([*head, "", "", "", "", "", *meta])
        for a in item.answers:
            writer.writerow(
                [
                    *head,
                    safe_cell(a.annotator),
                    safe_cell("|".join(a.labels)),
                    "true" if a.skipped else "false",
                    a.created_at.isoformat(),
                    a.updated_at.isoformat(),
                    *meta,
                ]
            )
        if count % chunk_size == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def metadata_keys(project: Project) -> list[str]:
    """Every key of the project's items' metadata objects, sorted: the CSV's "meta." columns.
    One pass over the items in the database, before the rows stream."""
    table = connection.ops.quote_name(Item._meta.db_table)
    if connection.vendor == "postgresql":
        sql = (
            f"SELECT DISTINCT jsonb_object_keys(metadata) FROM {table} "
            "WHERE project_id = %s AND jsonb_typeof(metadata) = 'object'"
        )
    else:  # SQLite's JSON1
        sql = (
            f"SELECT DISTINCT j.key FROM {table} i, json_each(i.metadata) j "
            "WHERE i.project_id = %s AND json_type(i.metadata) = 'object'"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk])
        return sorted(row[0] for row in cursor.fetchall())


def _meta_cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return safe_cell(text)


def export_chunks(
    project: Project,
    fmt: str,
    *,
    chunk_size: int = CHUNK_ITEMS,
    items: QuerySet[Item] | None = None,
) -> Iterator[str]:
    """The export in `fmt`, of the project's items or of a selection of them (`items`)."""
    if fmt == "jsonl":
        return jsonl_chunks(project, chunk_size=chunk_size, items=items)
    if fmt == "csv":
        return csv_chunks(project, chunk_size=chunk_size, items=items)
    if fmt == "labelstudio":
        from annotations.exporters.labelstudio import labelstudio_chunks

        return labelstudio_chunks(project, chunk_size=chunk_size, items=items)
    if fmt == "doccano":
        from annotations.exporters.doccano import doccano_chunks

        return doccano_chunks(project, chunk_size=chunk_size, items=items)
    raise ValueError(f"Unknown export format {fmt!r}; use {', '.join(FORMATS)}.")
