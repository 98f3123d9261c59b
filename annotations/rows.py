"""Model instances from plain SQL rows, for the few statements every submission sends.

Building an ORM query with `select_related` cost several times what running it did (the
locked item, its project, review and gold row: ~3 ms of CPU a submission here). These helpers
do what the ORM's compiler does with the row it gets back, and nothing else: each column goes
through the backend's and the field's converters (JSON text, SQLite's dates and booleans) and
the instance is made with `Model.from_db`, so it saves and compares like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


def columns(model: type[Model], alias: str) -> str:
    """The model's concrete columns, qualified by `alias`, in the order `instance` reads them."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def width(model: type[Model]) -> int:
    """How many values of a row `columns` gives for the model."""
    return len(model._meta.concrete_fields)


@cache
def _converters(model: type[Model], vendor: str) -> tuple[tuple[Any, list[Callable]], ...]:
    out = []
    for field in model._meta.concrete_fields:
        col = field.get_col(model._meta.db_table)
        out.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return tuple(out)


def instance(model: type[M], values: Sequence[Any]) -> M | None:
    """The instance of `model` from its `columns` values; None for a LEFT JOIN that found no
    row (a null primary key)."""
    fields = model._meta.concrete_fields
    if values[[f.primary_key for f in fields].index(True)] is None:
        return None
    converted = []
    for (col, converters), value in zip(_converters(model, connection.vendor), values, strict=True):
        for convert in converters:
            value = convert(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def insert(obj: Model) -> None:
    """INSERT `obj` as `obj.save()` would on a new row (auto_now fields set, values prepared
    by their fields), in plain SQL, and set its primary key. For rows with no signal receivers
    and no inherited parents: it sends no signals."""
    meta = obj._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.auto_created)]
    values = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    returning = connection.features.can_return_columns_from_insert
    if returning:
        sql += f" RETURNING {quote(meta.pk.column)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        pk = cursor.fetchone()[0] if returning else cursor.lastrowid
    if meta.pk.auto_created:
        setattr(obj, meta.pk.attname, pk)
    obj._state.adding = False
    obj._state.db = connection.alias
