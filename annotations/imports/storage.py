"""Writing imported items: the bulk insert (COPY on PostgreSQL), the duplicate-id and
exact-duplicate lookups, the statistics refresh after a big import, and the transaction that
makes an import all-or-nothing, including the image files written to storage on the way."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from django.core.files.storage import Storage
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import JSONField
from django.utils import timezone

from annotations.imports.errors import ImportFailed
from annotations.models import Item, Project

ANALYZE_AFTER = 10_000  # items; see refresh_statistics_after

logger = logging.getLogger(__name__)


class NewText(NamedTuple):
    external_id: str
    text: str
    metadata: dict[str, Any]
    content_hash: int | None = None


def insert_text_items(project: Project, rows: list[NewText]) -> None:
    """Insert validated text items. On PostgreSQL this is a COPY, several times faster than
    bulk_create (which spends most of its time building model instances and parameter
    arrays); elsewhere bulk_create. Either way every column gets what `Item()` would give it,
    including a fresh random priority per row, so the queue serves a random sample first."""
    connection = connections[router.db_for_write(Item)]
    if connection.vendor != "postgresql":
        Item.objects.bulk_create(
            [
                Item(project=project, external_id=e, text=t, metadata=m, content_hash=h)
                for e, t, m, h in rows
            ],
            batch_size=500,
        )
        return
    columns, template, per_row = _copy_layout(project, timezone.now())
    at_id, at_text, at_metadata, at_hash = (
        columns.index(c) for c in ("external_id", "text", "metadata", "content_hash")
    )
    dumps = json.dumps
    with connection.cursor() as cursor, connection.wrap_database_errors:
        statement = "COPY {} ({}) FROM STDIN".format(
            connection.ops.quote_name(Item._meta.db_table),
            ", ".join(connection.ops.quote_name(c) for c in columns),
        )
        with cursor.cursor.copy(statement) as copy:
            for external_id, text, metadata, content_hash in rows:
                row = template.copy()
                row[at_id] = external_id
                row[at_text] = text
                row[at_metadata] = dumps(metadata)
                row[at_hash] = content_hash
                for index, make in per_row:
                    row[index] = make()
                copy.write_row(row)


def _copy_layout(
    project: Project, now: Any
) -> tuple[list[str], list[Any], list[tuple[int, Callable[[], Any]]]]:
    """Columns of a new text item, a row of their constant values, and the columns whose
    default is computed per row (a callable default such as the random priority)."""
    columns: list[str] = []
    template: list[Any] = []
    per_row: list[tuple[int, Callable[[], Any]]] = []
    for field in Item._meta.concrete_fields:
        if field.primary_key:
            continue
        index = len(columns)
        columns.append(field.column)
        value: Any = None
        if field.name in NewText._fields:
            pass  # filled per row from the file
        elif field.name == "project":
            value = project.pk
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now
        elif field.has_default() and callable(field.default):
            per_row.append((index, field.default))
        else:
            value = field.get_default()
            if isinstance(field, JSONField):
                value = json.dumps(value)
        template.append(value)
    return columns, template, per_row


def refresh_statistics_after(created: int) -> None:
    """After a big import, have PostgreSQL re-sample the item table once it commits.

    Until autovacuum gets to it the planner believes the project is as small as before, and
    picks plans (a scan of the whole project instead of the unique index) that make the next
    import's duplicate check and the annotation queue slow. ANALYZE samples a fixed number of
    rows, so it costs well under a second even at millions of items.
    """
    connection = connections[router.db_for_write(Item)]
    if created < ANALYZE_AFTER or connection.vendor != "postgresql":
        return

    def analyze() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(Item._meta.db_table)}")
        except DatabaseError:
            logger.warning("ANALYZE after an import failed", exc_info=True)

    transaction.on_commit(analyze, using=connection.alias)


def existing_ids(project: Project, ids: list[str], chunk: int = 5000) -> set[str]:
    """Which of `ids` the project already has."""
    connection = connections[router.db_for_read(Item)]
    found: set[str] = set()
    if connection.vendor == "postgresql":
        # One array parameter instead of thousands of placeholders.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT external_id FROM {connection.ops.quote_name(Item._meta.db_table)} "
                "WHERE project_id = %s AND external_id = ANY(%s)",
                [project.pk, ids],
            )
            return {row[0] for row in cursor.fetchall()}
    for start in range(0, len(ids), chunk):
        found.update(
            Item.objects.filter(
                project=project, external_id__in=ids[start : start + chunk]
            ).values_list("external_id", flat=True)
        )
    return found


def existing_hashes(project: Project, hashes: list[int]) -> dict[int, str]:
    """Which of the content `hashes` the project's items already have, each with the external
    id of one such item (an index lookup per hash: `item_content_hash_idx`)."""
    if not hashes:
        return {}
    connection = connections[router.db_for_read(Item)]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT ON (content_hash) content_hash, external_id FROM "
                f"{connection.ops.quote_name(Item._meta.db_table)} "
                "WHERE project_id = %s AND content_hash = ANY(%s) ORDER BY content_hash, id",
                [project.pk, hashes],
            )
            return dict(cursor.fetchall())
    found: dict[int, str] = {}
    for content_hash, external_id in (
        Item.objects.filter(project=project, content_hash__in=hashes)
        .order_by("-id")
        .values_list("content_hash", "external_id")
    ):
        found[content_hash] = external_id
    return found


@contextlib.contextmanager
def one_transaction(name: str, keys: str) -> Iterator[None]:
    """Run the block in one transaction. The ids were checked inside it, so a unique-constraint
    clash means another import added the same `keys` meanwhile: say so as ImportFailed (try
    again) rather than let a database error through."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError as exc:
        raise ImportFailed(
            [
                f"{name}: another import added items with the same {keys} at the same time; "
                "nothing was imported, try again."
            ]
        ) from exc


@contextlib.contextmanager
def files_removed_on_failure(storage: Storage) -> Iterator[list[str]]:
    """Yield a list for the names of the files written to `storage`; if the block fails for
    any reason, delete them again, so a failed import leaves no orphaned files behind."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        for stored in written:
            with contextlib.suppress(OSError):
                storage.delete(stored)
        raise
