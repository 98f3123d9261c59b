"""Import items into a project: text from CSV, JSON and JSONL files, images from a folder or a
zip archive.

Every import is all-or-nothing: the rows go in inside one transaction, and image files written
to storage are deleted again if anything fails, so a bad file never leaves half an import
behind. Problems are collected with their location ("reviews.csv line 14: …") and raised
together as `ImportFailed`, so a user fixes the file once rather than once per error. Views,
management commands and the API all call these functions.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Any, NamedTuple, NoReturn

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import JSONField
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from annotations.models import Item, Project
from annotations.services import add_items_counted

#: Text formats by name and the file extensions that imply them.
TEXT_FORMATS = {"csv": (".csv",), "json": (".json",), "jsonl": (".jsonl", ".ndjson")}
#: Image formats accepted (Pillow's names), with the extension the stored file gets. Anything
#: else — SVG, HTML, TIFF, PDF — is refused whatever the file is called.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
MAX_ERRORS = 50
ANALYZE_AFTER = 10_000  # items; see _refresh_statistics_after
TEXT_BATCH = 2000
IMAGE_BATCH = 200
EXTERNAL_ID_MAX = Item._meta.get_field("external_id").max_length
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})

logger = logging.getLogger(__name__)

# Text cells may be long (articles, transcripts); the csv module's default cap is 128 KiB.
csv.field_size_limit(64 * 1024 * 1024)

#: Called as progress(done, total) while importing; total is None when unknown. For text files
#: the unit is bytes read, for images the number of images.
Progress = Callable[[int, "int | None"], None]


class ImportFailed(Exception):
    """Nothing was imported. `errors` lists the first problems found, each naming where it is;
    `total` counts every problem found."""

    def __init__(self, errors: Iterable[str], total: int | None = None) -> None:
        self.errors = list(errors)
        self.total = max(total or 0, len(self.errors))
        super().__init__("\n".join(self.messages))

    @property
    def more(self) -> int:
        return self.total - len(self.errors)

    @property
    def messages(self) -> list[str]:
        """The errors to show, ending with "… and N more errors" when some were left out."""
        if not self.more:
            return list(self.errors)
        return [*self.errors, f"… and {self.more:,} more error{'s' if self.more != 1 else ''}"]


@dataclass(frozen=True)
class ImportResult:
    created: int
    source: str


class _Errors:
    """Collects located errors, keeping the first MAX_ERRORS and counting the rest."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.total = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_ERRORS:
            self.shown.append(message)

    def __bool__(self) -> bool:
        return self.total > 0

    def fail(self, *final: str) -> NoReturn:
        for message in final:
            self.add(message)
        raise ImportFailed(self.shown, self.total)


def import_file(
    *,
    project: Project,
    fileobj: IO[bytes],
    filename: str,
    fmt: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import one uploaded file: a zip archive of images or a CSV/JSON/JSONL text file."""
    if guess_format(filename, fmt) == "zip":
        return import_image_archive(
            project=project, fileobj=fileobj, filename=filename, progress=progress
        )
    return import_text_items(
        project=project,
        fileobj=fileobj,
        filename=filename,
        fmt=fmt,
        text_field=text_field,
        id_field=id_field,
        progress=progress,
    )


def guess_format(filename: str, fmt: str | None = None) -> str:
    """The format named by `fmt`, else the one the file's extension implies."""
    name = PurePath(filename).name
    if fmt:
        fmt = fmt.strip().lower()
        if fmt not in (*TEXT_FORMATS, "zip"):
            raise ImportFailed([f"{name}: unknown format {fmt!r}; use csv, json, jsonl or zip."])
        return fmt
    suffix = PurePath(name).suffix.lower()
    if suffix == ".zip":
        return "zip"
    for candidate, suffixes in TEXT_FORMATS.items():
        if suffix in suffixes:
            return candidate
    raise ImportFailed(
        [
            f"{name}: cannot tell the format from the file name; "
            "choose csv, json or jsonl (or a .zip archive of images)."
        ]
    )


def _require_kind(project: Project, kind: str, name: str) -> None:
    if project.item_kind == kind:
        return
    if kind == Project.ItemKind.TEXT:
        raise ImportFailed(
            [
                f"{name}: {project.name!r} is an image project; import images from a folder "
                "or a .zip archive, not a text file."
            ]
        )
    raise ImportFailed(
        [
            f"{name}: {project.name!r} is a text project; images can only be imported into "
            "an image project."
        ]
    )


# --- Text -----------------------------------------------------------------------------------


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
) -> ImportResult:
    """Import text items from a CSV file, a JSON array of objects, or JSONL (one object a line).

    `text_field` names the column/field holding the text. The external id comes from
    `id_field`, else from an "id" column/field when the file has one, else it is
    "<file name>:<line>" ("<file name>:<record>" for JSON). Every other field goes into the
    item's metadata.
    """
    name = PurePath(filename).name
    fmt = guess_format(name, fmt)
    if fmt not in TEXT_FORMATS:
        raise ImportFailed([f"{name}: a {fmt} file holds images, not text items."])
    _require_kind(project, Project.ItemKind.TEXT, name)
    text_field = (text_field or "text").strip()
    id_field = (id_field or "").strip() or None
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    lines = _ByteLines(fileobj)
    errors = _Errors()
    if fmt == "csv":
        records = _csv_records(lines, name, errors, text_field, id_field)
        word = "column"
    elif fmt == "jsonl":
        records = _jsonl_records(lines, name, errors)
        word = "field"
    else:
        records = _json_records(lines, name, errors)
        word = "field"

    def report() -> None:
        if progress is not None:
            progress(lines.bytes_read, _size_of(fileobj))

    try:
        with transaction.atomic():
            created = _store_text(
                project, records, name, errors, text_field, id_field, word, report
            )
    except IntegrityError as exc:
        raise ImportFailed(
            [
                f"{name}: another import added items with the same ids at the same time; "
                "nothing was imported, try again."
            ]
        ) from exc
    report()
    return ImportResult(created=created, source=name)


def _store_text(
    project: Project,
    records: Iterator[_Record],
    name: str,
    errors: _Errors,
    text_field: str,
    id_field: str | None,
    word: str,
    report: Callable[[], None],
) -> int:
    """Validate and insert the records in batches (inside the caller's transaction); raise
    ImportFailed with every problem found, which rolls back what was inserted."""
    seen: dict[str, str] = {}
    batch: list[_NewText] = []
    wheres: list[str] = []
    created = 0
    first = True
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
        earlier = seen.get(item.external_id)
        if earlier is not None:
            errors.add(f"{name} {where}: id {item.external_id!r} is also on {earlier}")
            continue
        seen[item.external_id] = where
        batch.append(item)
        wheres.append(where)
        if len(batch) >= TEXT_BATCH:
            created += _flush_text(project, batch, wheres, name, errors, check_db)
            batch, wheres = [], []
            report()
    created += _flush_text(project, batch, wheres, name, errors, check_db)
    if errors:
        errors.fail()
    if first:
        raise ImportFailed([f"{name}: the file holds no items."])
    add_items_counted(project, created)
    _refresh_statistics_after(created)
    return created


def _text_item(
    fields: dict[str, Any],
    where: str,
    auto_id: str,
    name: str,
    word: str,
    text_field: str,
    id_field: str | None,
    errors: _Errors,
) -> _NewText | None:
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
    return _NewText(external_id, text, metadata)


def _flush_text(
    project: Project,
    batch: list[_NewText],
    wheres: list[str],
    name: str,
    errors: _Errors,
    check_db: bool,
) -> int:
    """Insert a batch unless it clashes with items already in the project (or the import is
    already failing, then only look for more problems)."""
    if not batch:
        return 0
    taken = _existing_ids(project, [i.external_id for i in batch]) if check_db else set()
    for item, where in zip(batch, wheres, strict=True):
        if item.external_id in taken:
            errors.add(f"{name} {where}: id {item.external_id!r} is already in the project")
    if errors:
        return 0
    insert_text_items(project, batch)
    return len(batch)


class _NewText(NamedTuple):
    external_id: str
    text: str
    metadata: dict[str, Any]


def insert_text_items(project: Project, rows: list[_NewText]) -> None:
    """Insert validated text items. On PostgreSQL this is a COPY, several times faster than
    bulk_create (which spends most of its time building model instances and parameter
    arrays); elsewhere bulk_create. Either way every column gets what `Item()` would give it,
    including a fresh random priority per row, so the queue serves a random sample first."""
    connection = connections[router.db_for_write(Item)]
    if connection.vendor != "postgresql":
        Item.objects.bulk_create(
            [Item(project=project, external_id=e, text=t, metadata=m) for e, t, m in rows],
            batch_size=500,
        )
        return
    columns, template, per_row = _copy_layout(project, timezone.now())
    at_id, at_text, at_metadata = (columns.index(c) for c in ("external_id", "text", "metadata"))
    dumps = json.dumps
    with connection.cursor() as cursor, connection.wrap_database_errors:
        statement = "COPY {} ({}) FROM STDIN".format(
            connection.ops.quote_name(Item._meta.db_table),
            ", ".join(connection.ops.quote_name(c) for c in columns),
        )
        with cursor.cursor.copy(statement) as copy:
            for external_id, text, metadata in rows:
                row = template.copy()
                row[at_id] = external_id
                row[at_text] = text
                row[at_metadata] = dumps(metadata)
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
        if field.name in _NewText._fields:
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


class _ByteLines:
    """A binary file's lines, split on b"\\n" only (a CSV cell may hold a lone \\r), counting
    the bytes read for the progress bar. Reads in chunks, so big files are never in memory."""

    def __init__(self, fileobj: IO[bytes], chunk_size: int = 1 << 20) -> None:
        self.fileobj = fileobj
        self.chunk_size = chunk_size
        self.bytes_read = 0

    def __iter__(self) -> Iterator[bytes]:
        pending: list[bytes] = []
        while chunk := self.fileobj.read(self.chunk_size):
            self.bytes_read += len(chunk)
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

    def read_all(self) -> bytes:
        data = self.fileobj.read()
        self.bytes_read += len(data)
        return data


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
    lines: _ByteLines, name: str, errors: _Errors, text_field: str, id_field: str | None
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


def _jsonl_records(lines: _ByteLines, name: str, errors: _Errors) -> Iterator[_Record]:
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
        where = f"line {number}"
        if not isinstance(value, dict):
            errors.add(f"{name} {where}: expected a JSON object, got {_json_type(value)}")
            continue
        if problem := _bad_strings(value):
            errors.add(f"{name} {where}: {problem}")
            continue
        yield _Record(where, f"{name}:{number}", value)
    if empty:
        raise ImportFailed([f"{name}: the file is empty."])


def _json_records(lines: _ByteLines, name: str, errors: _Errors) -> Iterator[_Record]:
    data = lines.read_all()
    _refuse_utf16(data[:2], name)
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        raw_line = data[line_start : line_end if line_end != -1 else len(data)]
        shifted = UnicodeDecodeError(
            exc.encoding, raw_line, exc.start - line_start, exc.end - line_start, exc.reason
        )
        number = data.count(b"\n", 0, exc.start) + 1
        raise ImportFailed([_not_utf8(name, number, raw_line, shifted)]) from None
    if not text.strip():
        raise ImportFailed([f"{name}: the file is empty."])
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise ImportFailed([_bad_json(name, exc)]) from None
    if not isinstance(value, list):
        raise ImportFailed(
            [
                f"{name}: expected a JSON array of objects, got {_json_type(value)}. "
                "(For one object per line, use the jsonl format.)"
            ]
        )
    if not value:
        raise ImportFailed([f"{name}: the array holds no records."])
    for index, record in enumerate(value, 1):
        where = f"record {index}"
        if not isinstance(record, dict):
            errors.add(f"{name} {where}: expected a JSON object, got {_json_type(record)}")
            continue
        if problem := _bad_strings(record):
            errors.add(f"{name} {where}: {problem}")
            continue
        yield _Record(where, f"{name}:{index}", record)


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


# --- Images ---------------------------------------------------------------------------------


class BadImage(Exception):
    """The bytes are not an acceptable image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def check_image(data: bytes) -> ImageInfo:
    """Verify that `data` is a complete PNG/JPEG/GIF/WEBP/BMP image within the pixel limit.

    The format is read from the content, never the file name. `verify()` checks the structure
    (CRCs for PNG); a second open and `load()` decodes every pixel, which catches truncated
    files. The pixel limit is checked from the header, before anything is decoded.
    """
    max_pixels = settings.IMPORT_MAX_IMAGE_PIXELS
    allowed = tuple(IMAGE_FORMATS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=allowed) as image:
                # Pillow names a JPEG with extra frames (many phone cameras) "MPO".
                fmt = "JPEG" if image.format == "MPO" else image.format
                width, height = image.size
                if width * height > max_pixels:
                    raise BadImage(
                        f"{width:,}×{height:,} pixels is over the limit of {max_pixels:,} pixels"
                    )
                image.verify()
            with Image.open(io.BytesIO(data), formats=allowed) as image:
                image.load()
        except BadImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage(
                f"too many pixels (over the limit of {max_pixels:,}; a decompression bomb?)"
            ) from None
        except UnidentifiedImageError:
            raise BadImage(_what_it_is(data)) from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
            raise BadImage(f"damaged or truncated image ({exc})") from None
    if fmt not in IMAGE_FORMATS:
        raise BadImage(_what_it_is(data))
    return ImageInfo(format=fmt, width=width, height=height)


def _what_it_is(data: bytes) -> str:
    accepted = ", ".join(IMAGE_FORMATS)
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<"):
        return f"is markup (SVG, HTML or XML), not an image; refused (accepted: {accepted})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                actual = image.format
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not an image"
        actual = None
    if actual:
        return f"is a {actual} image, which is not accepted (accepted: {accepted})"
    return f"is not an image in an accepted format ({accepted})"


@dataclass(frozen=True)
class _ImageSource:
    path: str  # relative path, "/"-separated: the item's external id
    size: int  # declared size in bytes
    read: Callable[[int], bytes]  # read(limit) returns at most `limit` bytes


class _ReadError(Exception):
    pass


def import_image_archive(
    *,
    project: Project,
    fileobj: IO[bytes],
    filename: str,
    progress: Progress | None = None,
) -> ImportResult:
    """Import every image in a zip archive; the external id is the path inside the archive.

    Entries with absolute paths, `..` components or symlinks refuse the whole archive, as do
    too many entries or too many uncompressed bytes. Directories and the usual junk
    (`__MACOSX/`, `.DS_Store`, hidden files, Thumbs.db) are skipped.
    """
    name = PurePath(filename).name
    _require_kind(project, Project.ItemKind.IMAGE, name)
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ImportFailed([f"{name}: not a valid zip archive."]) from None
    with archive:
        sources = _archive_sources(archive, name)
        return _store_images(project, name, sources, progress)


def _archive_sources(archive: zipfile.ZipFile, name: str) -> list[_ImageSource]:
    errors = _Errors()
    sources: list[_ImageSource] = []
    total_bytes = 0
    for info in archive.infolist():
        raw = info.filename
        path = raw.replace("\\", "/")
        if info.is_dir() or path.endswith("/"):
            continue
        where = f"{name}: entry {raw!r}"
        if stat.S_ISLNK(info.external_attr >> 16):
            errors.add(f"{where} is a symbolic link; refused")
            continue
        if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
            errors.add(f"{where} has an absolute path; refused")
            continue
        parts = path.split("/")
        if ".." in parts:
            errors.add(f"{where} contains '..'; refused")
            continue
        parts = [p for p in parts if p not in ("", ".")]
        if _is_junk(parts):
            continue
        if info.flag_bits & 0x1:
            errors.add(f"{where} is encrypted; refused")
            continue
        total_bytes += info.file_size
        sources.append(
            _ImageSource(
                path="/".join(parts),
                size=info.file_size,
                read=lambda limit, info=info: _read_entry(archive, info, limit),
            )
        )
    max_entries = getattr(settings, "IMPORT_MAX_ARCHIVE_ENTRIES", 200_000)
    if len(sources) > max_entries:
        errors.add(f"{name}: {len(sources):,} files is more than the limit of {max_entries:,}")
    max_bytes = settings.IMPORT_MAX_ARCHIVE_BYTES
    if total_bytes > max_bytes:
        errors.add(
            f"{name}: the files unpack to {total_bytes:,} bytes, more than the limit of "
            f"{max_bytes:,} bytes"
        )
    if errors:
        errors.fail()
    return sources


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    try:
        with archive.open(info) as handle:
            return handle.read(limit)
    except (
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
        OSError,
        EOFError,
        zlib.error,
    ) as exc:
        raise _ReadError(f"cannot be read from the archive ({exc})") from None


def _is_junk(parts: list[str]) -> bool:
    return (
        not parts
        or parts[0] == "__MACOSX"
        or any(p.startswith(".") for p in parts)
        or parts[-1].lower() in JUNK_NAMES
    )


def import_image_folder(
    *, project: Project, path: str | os.PathLike[str], progress: Progress | None = None
) -> ImportResult:
    """Import every image under a folder (recursively); the external id is the path relative
    to the folder. Symlinks are refused; hidden files and folders are skipped."""
    root = Path(path)
    name = root.name or str(root)
    _require_kind(project, Project.ItemKind.IMAGE, name)
    if not root.is_dir():
        raise ImportFailed([f"{root}: not a folder."])
    errors = _Errors()
    sources: list[_ImageSource] = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        keep = []
        for sub in sorted(subdirs):
            rel = (here / sub).relative_to(root).as_posix()
            if _is_junk(rel.split("/")):
                continue
            if (here / sub).is_symlink():
                errors.add(f"{name}: {rel} is a symbolic link; refused")
                continue
            keep.append(sub)
        subdirs[:] = keep
        for file in sorted(files):
            full = here / file
            rel = full.relative_to(root).as_posix()
            if _is_junk(rel.split("/")):
                continue
            if full.is_symlink():
                errors.add(f"{name}: {rel} is a symbolic link; refused")
                continue
            if not full.is_file():
                errors.add(f"{name}: {rel} is not a regular file; refused")
                continue
            sources.append(
                _ImageSource(path=rel, size=full.stat().st_size, read=_file_reader(full))
            )
    if errors:
        errors.fail()
    sources.sort(key=lambda s: s.path)
    return _store_images(project, name, sources, progress)


def _file_reader(path: Path) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        try:
            with path.open("rb") as handle:
                return handle.read(limit)
        except OSError as exc:
            raise _ReadError(f"cannot be read ({exc.strerror or exc})") from None

    return read


def _store_images(
    project: Project, name: str, sources: list[_ImageSource], progress: Progress | None
) -> ImportResult:
    """Verify each image, write it to storage and insert the items, all or nothing."""
    if not sources:
        raise ImportFailed([f"{name}: no image files found."])
    max_bytes = settings.IMPORT_MAX_IMAGE_BYTES
    storage = Item._meta.get_field("image").storage
    errors = _Errors()
    written: list[str] = []
    total = len(sources)
    created = 0
    try:
        with transaction.atomic():
            taken = _existing_ids(project, [s.path for s in sources])
            seen: set[str] = set()
            batch: list[Item] = []
            for done, source in enumerate(sources, 1):
                where = f"{name}: {source.path}"
                if progress is not None and (done % 50 == 0 or done == total):
                    progress(done, total)
                if source.path in seen:
                    errors.add(f"{where} appears twice in the archive")
                    continue
                seen.add(source.path)
                if source.path in taken:
                    errors.add(f"{where} is already in the project")
                    continue
                if len(source.path) > EXTERNAL_ID_MAX:
                    errors.add(f"{where}: the path is longer than {EXTERNAL_ID_MAX} characters")
                    continue
                if source.size > max_bytes:
                    errors.add(f"{where}: {source.size:,} bytes is over the limit of {max_bytes:,}")
                    continue
                try:
                    data = source.read(max_bytes + 1)
                except _ReadError as exc:
                    errors.add(f"{where} {exc}")
                    continue
                if len(data) > max_bytes:
                    errors.add(f"{where}: the file is over the limit of {max_bytes:,} bytes")
                    continue
                try:
                    info = check_image(data)
                except BadImage as exc:
                    errors.add(
                        f"{where} {exc}" if str(exc).startswith("is ") else f"{where}: {exc}"
                    )
                    continue
                if errors:
                    continue  # failing anyway: keep checking, stop writing
                item = Item(
                    project=project,
                    external_id=source.path,
                    image_format=info.format,
                    image_width=info.width,
                    image_height=info.height,
                )
                stem = PurePath(source.path).stem or "image"
                item.image.save(stem + IMAGE_FORMATS[info.format], ContentFile(data), save=False)
                written.append(item.image.name)
                batch.append(item)
                if len(batch) >= IMAGE_BATCH:
                    Item.objects.bulk_create(batch)
                    created += len(batch)
                    batch = []
            if errors:
                errors.fail()
            Item.objects.bulk_create(batch)
            created += len(batch)
            add_items_counted(project, created)
            _refresh_statistics_after(created)
    except BaseException as exc:
        for stored in written:
            with contextlib.suppress(OSError):
                storage.delete(stored)
        if isinstance(exc, IntegrityError):
            raise ImportFailed(
                [
                    f"{name}: another import added items with the same paths at the same time; "
                    "nothing was imported, try again."
                ]
            ) from exc
        raise
    return ImportResult(created=created, source=name)


def _refresh_statistics_after(created: int) -> None:
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


def _existing_ids(project: Project, ids: list[str], chunk: int = 5000) -> set[str]:
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
