"""Bulk uploads of predictions and vectors through the API: a JSON array or JSON Lines body,
read incrementally, validated row by row, stored all or nothing.

The body is parsed a piece at a time (`annotations.imports.json_array` for an array, a line at
a time for JSON Lines) and stored in batches inside one transaction, so memory stays at a batch
whatever the body's size, and the first bad row rolls every batch back: nothing is stored. The
rest of the body is still read, to report up to `MAX_ERRORS` problems in one answer, each with
its row (0-based position in the array, or the JSON Lines record) and field.

The rules for one prediction or vector are `annotations.preannotations`' (shared with imports).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from annotations.imports.json_array import JSONArrayError, iter_json_array
from annotations.models import Item, Project
from annotations.preannotations import (
    PreAnnotationError,
    PredictionIn,
    parse_prediction,
    parse_vector,
    predictions_save,
    vectors_save,
)

__all__ = [
    "MAX_ERRORS",
    "RowError",
    "UploadError",
    "UploadResult",
    "predictions_upload",
    "vectors_upload",
]

#: Problems reported in one answer; past it the rest of the body is not read.
MAX_ERRORS = 50
#: Rows resolved and stored at once.
BATCH = 2000
#: Nesting allowed in one row (a prediction's scores object is two levels deep).
MAX_DEPTH = 8
_ROW_FIELDS_PREDICTION = {"item", "model", "model_name", "label", "labels", "scores", "score"}
_ROW_FIELDS_VECTOR = {"item", "vector"}


@dataclass(frozen=True)
class RowError:
    """One problem: `row` is the 0-based record index (None: the body as a whole)."""

    row: int | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


class UploadError(Exception):
    """The upload stored nothing; `errors` say why and where."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} problem(s); nothing was stored")
        self.errors = errors


@dataclass
class UploadResult:
    stored: int = 0
    rows: int = 0
    models: set[str] = field(default_factory=set)


def records(chunks: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """(0-based index, parsed value) of each record of a JSON array or JSON Lines body, told
    apart by its first character. Raises UploadError for a body that cannot be read."""
    it = iter(chunks)
    head = b""
    for chunk in it:
        head += chunk
        if head.strip():
            break
    stripped = head.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    if not stripped:
        raise UploadError(
            [RowError(None, None, "the body is empty: send a JSON array or JSON Lines")]
        )

    def all_chunks() -> Iterator[bytes]:
        yield head
        yield from it

    if stripped[:1] == b"[":
        try:
            yield from enumerate(iter_json_array(all_chunks(), max_depth=MAX_DEPTH))
        except JSONArrayError as exc:
            row = None if exc.record is None else exc.record - 1
            where = f" at line {exc.line}" if exc.line else ""
            raise UploadError([RowError(row, None, f"{exc.message}{where}")]) from None
        return
    yield from _json_lines(all_chunks())


def _json_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line of a JSON Lines body, parsed."""
    pending = b""
    index = 0
    line_number = 0

    def parse(line: bytes) -> Any:
        try:
            return json.loads(line)
        except (UnicodeDecodeError, ValueError) as exc:
            raise UploadError(
                [RowError(index, None, f"line {line_number} is not valid JSON: {exc}")]
            ) from None

    for chunk in chunks:
        pending = (pending + chunk) if pending or line_number else chunk.lstrip(b"\xef\xbb\xbf")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line_number += 1
            if line.strip():
                yield index, parse(line)
                index += 1
    if pending.strip():
        line_number += 1
        yield index, parse(pending)


def _field_of(message: str, raw: dict[str, Any]) -> str | None:
    """Which field a `PreAnnotationError` from `parse_prediction` is about."""
    if message.startswith("unknown prediction field"):
        return message.split(": ", 1)[1].split(", ")[0]
    if "model" in message:
        return "model"
    if "scored class" in message or "the score of" in message or '"scores"' in message:
        return "scores"
    if '"score"' in message:
        return "score"
    if "label" in message:
        return "labels" if "labels" in raw else "label"
    return None


def _item_of(raw: dict[str, Any]) -> str:
    """The row's external item id; PreAnnotationError if it has none."""
    value = raw.get("item")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise PreAnnotationError('each row needs "item": the external id of one of the items')
    return value


class _Batches:
    """Rows gathered until BATCH, then resolved (external id → item id) and handed to `store`,
    which only runs while no row has failed."""

    def __init__(self, project: Project, store: Callable[[list[tuple[int, Any]]], int]) -> None:
        self.project = project
        self.store = store
        self.pending: list[tuple[int, str, Any]] = []
        self.errors: list[RowError] = []
        self.result = UploadResult()

    def fail(self, row: int | None, field_name: str | None, message: str) -> None:
        self.errors.append(RowError(row, field_name, message))

    def add(self, row: int, external_id: str, value: Any) -> None:
        self.pending.append((row, external_id, value))
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        wanted = {external_id for _, external_id, _ in batch}
        ids = dict(
            Item.objects.filter(project=self.project, external_id__in=wanted).values_list(
                "external_id", "id"
            )
        )
        resolved: dict[Any, tuple[int, Any]] = {}
        for row, external_id, (key, value) in batch:
            item_id = ids.get(external_id)
            if item_id is None:
                self.fail(row, "item", f"no item with the external id {external_id!r}")
            else:
                # One row per key in a statement (an upsert cannot touch a row twice): last wins.
                resolved[(item_id, key)] = (item_id, value)
        if not self.errors:
            self.result.stored += self.store(list(resolved.values()))


def _run(
    project: Project,
    chunks: Iterable[bytes],
    parse_row: Callable[[_Batches, int, dict[str, Any]], None],
    store: Callable[[list[tuple[int, Any]]], int],
    allowed: set[str],
) -> UploadResult:
    batches = _Batches(project, store)
    with transaction.atomic():
        for row, raw in records(chunks):
            batches.result.rows += 1
            if not isinstance(raw, dict):
                batches.fail(row, None, f"a row must be an object, not {type(raw).__name__}")
            else:
                unknown = sorted(set(raw) - allowed)
                if unknown:
                    batches.fail(row, unknown[0], f"unknown field {unknown[0]!r}")
                else:
                    parse_row(batches, row, raw)
            if len(batches.errors) >= MAX_ERRORS:
                break
        if len(batches.errors) < MAX_ERRORS:
            batches.flush()  # stores only while no row failed; names unknown items either way
        if not batches.errors and batches.result.rows == 0:
            batches.fail(None, None, "the body holds no rows")
        if batches.errors:
            transaction.set_rollback(True)
    if batches.errors:
        raise UploadError(batches.errors[:MAX_ERRORS])
    return batches.result


def predictions_upload(project: Project, chunks: Iterable[bytes]) -> UploadResult:
    """Store the predictions in a body of rows `{"item": external id, "model": name, "label" |
    "labels" | "scores", "score"}`; all or nothing (UploadError)."""
    classes = project.class_names()
    multi = project.is_multi_label

    def parse_row(batches: _Batches, row: int, raw: dict[str, Any]) -> None:
        try:
            external_id = _item_of(raw)
        except PreAnnotationError as exc:
            batches.fail(row, "item", str(exc))
            return
        body = {k: v for k, v in raw.items() if k != "item"}
        try:
            prediction = parse_prediction(body, classes=classes, multi_label=multi)
        except PreAnnotationError as exc:
            batches.fail(row, _field_of(str(exc), body), str(exc))
            return
        batches.result.models.add(prediction.model_name)
        batches.add(row, external_id, (prediction.model_name, prediction))

    def store(rows: list[tuple[int, PredictionIn]]) -> int:
        return predictions_save(project, rows)

    return _run(project, chunks, parse_row, store, _ROW_FIELDS_PREDICTION)


def vectors_upload(project: Project, chunks: Iterable[bytes]) -> UploadResult:
    """Store the vectors in a body of rows `{"item": external id, "vector": [numbers]}`; every
    vector of a project has the length of the first one stored. All or nothing (UploadError)."""
    dim: list[int | None] = [project.vector_dim]

    def parse_row(batches: _Batches, row: int, raw: dict[str, Any]) -> None:
        try:
            external_id = _item_of(raw)
        except PreAnnotationError as exc:
            batches.fail(row, "item", str(exc))
            return
        if "vector" not in raw:
            batches.fail(row, "vector", 'each row needs "vector": a list of numbers')
            return
        try:
            values = parse_vector(raw["vector"], dim=dim[0])
        except PreAnnotationError as exc:
            batches.fail(row, "vector", str(exc))
            return
        if dim[0] is None:
            dim[0] = len(values) // 4  # the first vector fixes the length for the rest
        batches.add(row, external_id, (None, values))

    def store(rows: list[tuple[int, bytes]]) -> int:
        return vectors_save(project, rows)

    try:
        return _run(project, chunks, parse_row, store, _ROW_FIELDS_VECTOR)
    finally:
        project.refresh_from_db(fields=["vector_dim"])
