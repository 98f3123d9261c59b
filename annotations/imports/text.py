"""Text imports: CSV, a JSON array of objects, or JSONL, read in chunks and validated row by
row, with every problem located by file, line (or record) and column/field."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import PurePath
from typing import IO, Any, NamedTuple, NoReturn

from annotations.content_hash import text_hash
from annotations.imports import json_array
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import (
    EXTERNAL_ID_MAX,
    TEXT_FORMATS,
    DuplicateLog,
    ImportResult,
    Progress,
    guess_format,
    require_kind,
)
from annotations.imports.json_array import iter_json_array
from annotations.imports.records import DEFAULT_MODEL, Extras, RecordCheck
from annotations.imports.storage import (
    NewText,
    existing_hashes,
    existing_ids,
    insert_text_items,
    one_transaction,
    refresh_statistics_after,
)
from annotations.models import Item, Project
from annotations.services import add_items_counted

TEXT_BATCH = 2000

# Text cells may be long (articles, transcripts); the csv module's default cap is 128 KiB.
csv.field_size_limit(64 * 1024 * 1024)


class _Record(NamedTuple):
    where: str  # "line 14" or "record 3"
    auto_id: str  # the external id used when the file has no id field
    fields: dict[str, Any]


def import_text_items(
    *,
    project: Project,
    fileobj: IO[bytes],
    filename: str,
    fmt: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Import text items from a CSV file, a JSON array of objects, or JSONL (one object a line).

    `text_field` names the column/field holding the text. The external id comes from
    `id_field`, else from an "id" column/field when the file has one, else it is
    "<file name>:<line>" ("<file name>:<record>" for JSON). In JSON and JSONL, a `prediction`
    (one) or `predictions` (a list) field holds a team's model predictions and `vector` the
    item's embedding (`annotations.preannotations`). Every other field goes into the item's
    metadata.

    A text equal, once normalised (`annotations.content_hash`), to an earlier line's or to an
    item already in the project is an exact duplicate: reported in the result with both places,
    imported anyway or, with `skip_duplicates`, left out.
    """
    name = PurePath(filename).name
    fmt = guess_format(name, fmt)
    if fmt not in TEXT_FORMATS:
        raise ImportFailed([f"{name}: a {fmt} file holds images, not text items."])
    require_kind(project, Project.ItemKind.TEXT, name)
    text_field = (text_field or "text").strip()
    id_field = (id_field or "").strip() or None
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    size = _size_of(fileobj)

    def report() -> None:
        if progress is not None:
            progress(lines.bytes_read, size)

    lines = _ByteLines(fileobj, on_read=report)  # the bar moves as the file is read
    errors = ErrorList()
    if fmt == "csv":
        records = _csv_records(lines, name, errors, text_field, id_field)
        word = "column"
    elif fmt == "jsonl":
        records = _jsonl_records(lines, name, errors)
        word = "field"
    else:
        records = _json_records(lines, name, errors)
        word = "field"

    duplicates = DuplicateLog(skip=skip_duplicates)
    with one_transaction(name, "ids"):
        created = _store_text(
            project, records, name, errors, text_field, id_field, word, report, duplicates
        )
    report()
    return duplicates.result(created=created, source=name)


def json_objects(
    fileobj: IO[bytes],
    name: str,
    fmt: str,
    errors: ErrorList,
    progress: Progress | None = None,
    *,
    text_field: str = "text",
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The objects of a JSON array (read incrementally), a JSONL file or (`fmt` "csv") the rows
    of a CSV file with a `text_field` column, each with where it is ("record 3", "line 4"), for
    the importers of other tools' formats. Malformed JSON or CSV and values that are not
    objects are added to `errors` (or raise ImportFailed), located."""
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    size = _size_of(fileobj)

    def report() -> None:
        if progress is not None:
            progress(lines.bytes_read, size)

    lines = _ByteLines(fileobj, on_read=report)
    if fmt == "csv":
        records = _csv_records(lines, name, errors, text_field, None)
    elif fmt == "jsonl":
        records = _jsonl_records(lines, name, errors)
    else:
        records = _json_records(lines, name, errors)
    for where, _auto_id, fields in records:
        yield where, fields
    report()


def _store_text(
    project: Project,
    records: Iterator[_Record],
    name: str,
    errors: ErrorList,
    text_field: str,
    id_field: str | None,
    word: str,
    report: Callable[[], None],
    duplicates: DuplicateLog,
) -> int:
    """Validate and insert the records in batches (inside the caller's transaction); raise
    ImportFailed with every problem found, which rolls back what was inserted."""
    seen: dict[str, str] = {}
    contents: dict[int, str] = {}  # content hash → where it first appears in the file
    batch: list[NewText] = []
    wheres: list[str] = []
    created = 0
    first = True
    # JSON and JSONL records may carry predictions and a vector (CSV cells are text).
    check = (
        RecordCheck(project, name, errors, default_model=DEFAULT_MODEL) if word == "field" else None
    )
    extras = Extras()
    # Into an empty project only duplicates within the file are possible (a concurrent import
    # of the same ids fails on the unique constraint instead).
    check_db = Item.objects.filter(project=project).exists()
    for where, auto_id, fields in records:
        if first:
            first = False
            if text_field not in fields:
                errors.fail(
                    f"{name} {where}: no {word} {text_field!r}; its {word}s are: "
                    f"{_names(fields)}. Choose the {word} that holds the text."
                )
            if id_field is None and "id" in fields:
                id_field = "id"
        item = _text_item(fields, where, auto_id, name, word, text_field, id_field, errors)
        if item is None:
            continue
        if check is not None:
            item = extras.take(item, where, check)
        earlier = seen.get(item.external_id)
        if earlier is not None:
            errors.add(f"{name} {where}: id {item.external_id!r} is also on {earlier}")
            continue
        seen[item.external_id] = where
        content_hash = text_hash(item.text)
        first_at = contents.get(content_hash)
        if first_at is not None:
            duplicates.add(where, first_at, position=_position(where))
            if duplicates.skip:
                continue
        else:
            contents[content_hash] = where
        batch.append(item._replace(content_hash=content_hash))
        wheres.append(where)
        if len(batch) >= TEXT_BATCH:
            created += _flush_text(
                project, batch, wheres, name, errors, check_db, duplicates, contents
            )
            extras.save(project, batch, errors, name)
            batch, wheres = [], []
            report()
    created += _flush_text(project, batch, wheres, name, errors, check_db, duplicates, contents)
    extras.save(project, batch, errors, name)
    if errors:
        errors.fail()
    if first:
        raise ImportFailed([f"{name}: the file holds no items."])
    add_items_counted(project, created)
    refresh_statistics_after(created)
    return created


def _text_item(
    fields: dict[str, Any],
    where: str,
    auto_id: str,
    name: str,
    word: str,
    text_field: str,
    id_field: str | None,
    errors: ErrorList,
) -> NewText | None:
    at = f"{name} {where}"
    ok = True
    text = fields.get(text_field)
    if text_field not in fields:
        errors.add(f"{at}: no {word} {text_field!r}; its {word}s are: {_names(fields)}")
        ok = False
    elif not isinstance(text, str):
        errors.add(f"{at}: {word} {text_field!r} must be a string, not {_json_type(text)}")
        ok = False
    elif not text.strip():
        errors.add(f"{at}: {word} {text_field!r} is empty")
        ok = False
    if id_field is None:
        external_id = auto_id
    else:
        raw = fields.get(id_field)
        if id_field not in fields:
            errors.add(f"{at}: no id {word} {id_field!r}; its {word}s are: {_names(fields)}")
            return None
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            errors.add(f"{at}: id {word} {id_field!r} must be a string or an integer")
            return None
        external_id = str(raw).strip()
        if not external_id:
            errors.add(f"{at}: id {word} {id_field!r} is empty")
            return None
    if len(external_id) > EXTERNAL_ID_MAX:
        errors.add(f"{at}: the id is longer than {EXTERNAL_ID_MAX} characters")
        return None
    if not ok:
        return None
    metadata = {k: v for k, v in fields.items() if k != text_field and k != id_field}
    return NewText(external_id, text, metadata)


def _flush_text(
    project: Project,
    batch: list[NewText],
    wheres: list[str],
    name: str,
    errors: ErrorList,
    check_db: bool,
    duplicates: DuplicateLog,
    contents: dict[int, str],
) -> int:
    """Insert a batch unless it clashes with items already in the project (or the import is
    already failing, then only look for more problems); note (or leave out) the texts that
    duplicate an item already in the project."""
    if not batch:
        return 0
    taken = existing_ids(project, [i.external_id for i in batch]) if check_db else set()
    for item, where in zip(batch, wheres, strict=True):
        if item.external_id in taken:
            errors.add(f"{name} {where}: id {item.external_id!r} is already in the project")
    if errors:
        return 0
    if check_db:
        # Only a text's first occurrence in the file is looked up: a later one was reported
        # as a duplicate of that line already.
        firsts = [
            i.content_hash
            for i, w in zip(batch, wheres, strict=True)
            if contents[i.content_hash] == w
        ]
        existing = existing_hashes(project, firsts)
        kept = []
        for item, where in zip(batch, wheres, strict=True):
            same = existing.get(item.content_hash) if contents[item.content_hash] == where else None
            if same is not None:
                duplicates.add(where, f"existing item {same!r}", position=_position(where))
                if duplicates.skip:
                    continue
            kept.append(item)
        batch = kept
    insert_text_items(project, batch)
    return len(batch)


def _position(where: str) -> int:
    """The number in "line 14" or "record 3": a record's place in the file."""
    return int(where.rsplit(" ", 1)[-1])


class _ByteLines:
    """A binary file's lines, split on b"\\n" only (a CSV cell may hold a lone \\r), counting
    the bytes read for the progress bar. Reads in chunks, so big files are never in memory."""

    def __init__(
        self,
        fileobj: IO[bytes],
        chunk_size: int = 1 << 20,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self.fileobj = fileobj
        self.chunk_size = chunk_size
        self.on_read = on_read
        self.bytes_read = 0
        self.blank = True

    def __iter__(self) -> Iterator[bytes]:
        pending: list[bytes] = []
        while chunk := self.fileobj.read(self.chunk_size):
            self.bytes_read += len(chunk)
            if self.on_read is not None:
                self.on_read()
            pieces = chunk.split(b"\n")
            if len(pieces) == 1:
                pending.append(chunk)
                continue
            pending.append(pieces[0])
            yield b"".join(pending) + b"\n"
            for piece in pieces[1:-1]:
                yield piece + b"\n"
            pending = [pieces[-1]] if pieces[-1] else []
        if pending:
            yield b"".join(pending)

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in chunks, whatever its lines; notes whether it is all blank."""
        self.blank = True
        while chunk := self.fileobj.read(self.chunk_size):
            self.bytes_read += len(chunk)
            if self.on_read is not None:
                self.on_read()
            if self.blank and chunk.strip(b" \t\r\n\xef\xbb\xbf"):
                self.blank = False
            yield chunk


def _decoded_lines(lines: Iterable[bytes], name: str) -> Iterator[str]:
    """UTF-8 text lines; a byte that is not UTF-8 stops the import, naming its line."""
    for number, raw in enumerate(lines, 1):
        if number == 1:
            _refuse_utf16(raw, name)
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFailed([_not_utf8(name, number, raw, exc)]) from None


def _refuse_utf16(head: bytes, name: str) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportFailed(
            [f"{name}: the file is UTF-16 text, not UTF-8; save it as UTF-8 and import again."]
        )


def _not_utf8(name: str, line: int, raw: bytes, exc: UnicodeDecodeError) -> str:
    column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
    return (
        f"{name} line {line}, column {column}: the file is not UTF-8 text (byte "
        f"0x{raw[exc.start]:02x}); save it as UTF-8 and import again."
    )


def _csv_records(
    lines: _ByteLines, name: str, errors: ErrorList, text_field: str, id_field: str | None
) -> Iterator[_Record]:
    reader = csv.reader(_decoded_lines(lines, name), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed([f"{name}: the file is empty."]) from None
    except csv.Error as exc:
        raise ImportFailed([f"{name} line 1: not valid CSV ({exc})."]) from None
    header = [h.strip() or f"column {i}" for i, h in enumerate(header, 1)]
    if any("\x00" in column for column in header):
        raise ImportFailed([f"{name} line 1: the header contains a NUL character."])
    positions: dict[str, int] = {}
    for i, column in enumerate(header, 1):
        if column in positions:
            errors.fail(
                f"{name} line 1: column {column!r} appears twice in the header "
                f"(columns {positions[column]} and {i})."
            )
        positions[column] = i
    for wanted in (text_field, id_field):
        if wanted and wanted not in positions:
            errors.fail(
                f"{name}: no column {wanted!r}; the columns are: {_names(header)}. "
                "Choose the column that holds the "
                + ("text." if wanted == text_field else "item ids.")
            )
    width = len(header)
    rows = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.fail(f"{name} line {start}: not valid CSV ({exc}).")
        if not row:
            continue  # a blank line
        rows += 1
        if len(row) != width:
            errors.add(
                f"{name} line {start}: {len(row)} cell{'s' if len(row) != 1 else ''}, "
                f"but the header has {width} column{'s' if width != 1 else ''}"
            )
            continue
        if any("\x00" in cell for cell in row):
            errors.add(f"{name} line {start}: contains a NUL character")
            continue
        yield _Record(f"line {start}", f"{name}:{start}", dict(zip(header, row, strict=True)))
    if not rows and not errors:
        raise ImportFailed([f"{name}: the file has a header but no rows."])


def _jsonl_records(lines: _ByteLines, name: str, errors: ErrorList) -> Iterator[_Record]:
    empty = True
    for number, line in enumerate(_decoded_lines(lines, name), 1):
        if not line.strip():
            continue
        empty = False
        try:
            value = json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:
            errors.add(_bad_json(name, exc, line=number))
            continue
        record = _object_record(value, name, f"line {number}", f"{name}:{number}", errors)
        if record is not None:
            yield record
    if empty:
        raise ImportFailed([f"{name}: the file is empty."])


def _json_records(lines: _ByteLines, name: str, errors: ErrorList) -> Iterator[_Record]:
    """The records of a JSON array, parsed incrementally (see `json_array`): a file of any
    size is read a chunk at a time. A syntax error stops the import, naming its line, column
    and record, after the problems already found in earlier records."""
    index = 0
    try:
        for index, value in enumerate(iter_json_array(lines.chunks(), max_depth=MAX_JSON_DEPTH), 1):
            record = _object_record(value, name, f"record {index}", f"{name}:{index}", errors)
            if record is not None:
                yield record
    except json_array.JSONArrayError as exc:
        errors.fail(_bad_json_array(name, exc))
    if not index:
        if not lines.bytes_read or lines.blank:
            raise ImportFailed([f"{name}: the file is empty."])
        raise ImportFailed([f"{name}: the array holds no records."])


def _bad_json_array(name: str, exc: json_array.JSONArrayError) -> str:
    if isinstance(exc, json_array.UTF16):
        return f"{name}: the file is UTF-16 text, not UTF-8; save it as UTF-8 and import again."
    where = f"{name} line {exc.line}" if exc.line else name
    if exc.column:
        where += f", column {exc.column}"
    if isinstance(exc, json_array.NotUTF8):
        return (
            f"{where}: the file is not UTF-8 text (byte 0x{exc.byte:02x}); save it as UTF-8 "
            "and import again."
        )
    if isinstance(exc, json_array.NotAnArray):
        return (
            f"{where}: expected a JSON array of objects, {exc.message}. "
            "(For one object per line, use the jsonl format.)"
        )
    return f"{where}: {exc.message}" + (f", in record {exc.record}" if exc.record else "")


def _object_record(
    value: Any, name: str, where: str, auto_id: str, errors: ErrorList
) -> _Record | None:
    """A parsed JSON line or array element as a record; None, with the error added, when it is
    not an object or holds something that cannot be stored."""
    if not isinstance(value, dict):
        errors.add(f"{name} {where}: expected a JSON object, got {_json_type(value)}")
        return None
    if problem := _bad_strings(value):
        errors.add(f"{name} {where}: {problem}")
        return None
    return _Record(where, auto_id, value)


def _refuse_constant(token: str) -> NoReturn:
    raise ValueError(f"{token} is not valid JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if math.isinf(value):
        raise ValueError(f"the number {token[:20]} is too large")
    return value


def _bad_json(name: str, exc: Exception, *, line: int | None = None) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{name} line {line or exc.lineno}, column {exc.colno}: malformed JSON ({exc.msg})"
    where = f" line {line}" if line else ""
    if isinstance(exc, RecursionError):
        return f"{name}{where}: the JSON is nested too deeply"
    return f"{name}{where}: malformed JSON ({exc})"


# A NUL or an unpaired surrogate (both reachable through \u escapes) cannot be stored.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = 64


def _bad_strings(value: Any) -> str | None:
    """Why a parsed JSON record cannot be stored (a NUL, a lone surrogate, or nesting deeper
    than MAX_JSON_DEPTH, which would overflow the stack when saved), or None if it can.
    Iterative, so a hostile record cannot exhaust the stack here either."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, str):
            if _UNSTORABLE.search(current):
                return "contains a NUL character or an invalid \\u escape"
        elif isinstance(current, dict | list):
            if depth >= MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(current, dict):
                stack.extend((k, depth) for k in current)
                stack.extend((v, depth + 1) for v in current.values())
            else:
                stack.extend((v, depth + 1) for v in current)
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _names(fields: Iterable[str]) -> str:
    shown = list(fields)
    return ", ".join(repr(f) for f in shown[:30]) + (" …" if len(shown) > 30 else "") or "(none)"


def _size_of(fileobj: IO[bytes]) -> int | None:
    size = getattr(fileobj, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(fileobj.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
