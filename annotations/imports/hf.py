"""Hugging Face datasets: a `datasets` folder as our exports write it (`data/<split>-*.parquet`,
or Parquet files at the top, with a dataset card), a zip of one, a single Parquet file, or a
JSONL/JSON file of rows.

The class names come from the `ClassLabel` feature in each Parquet file's schema metadata (as
`datasets` writes it); without one (a JSONL file, a Parquet file written by other tools), an
integer label is a position in the project's classes (what our exports' class ids are) and a
string label a class name. Columns: the text (`text`, or `text_field`), the id (`external_id`,
else `id`, else file and row), `label` (single-label) or `labels` (a list), `metadata` (a JSON
object, as our export writes it, merged into the metadata) and every other column as metadata,
except our export's `gold_source` and `agreement`. `vector`/`embedding` is the item's vector and
`prediction`/`predictions` model predictions. The labels are answers of one source, the account
`hf-import` (see `annotations.answer_imports`); a label of -1 or null leaves the item unlabelled.

pyarrow is imported inside the functions: a web process does not load it at start-up.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

from annotations.answer_imports import ExternalAnnotator
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import ImportResult, Progress
from annotations.imports.records import RawAnswer, Record, store_text_records
from annotations.imports.text import json_objects
from annotations.models import Project

SOURCE = ExternalAnnotator("hf", "import")
DEFAULT_MODEL = "hf"
#: Our export's columns that are not the item's metadata.
SKIPPED_COLUMNS = ("gold_source", "agreement")
ID_COLUMNS = ("external_id", "id")
VECTOR_COLUMNS = ("vector", "embedding")
_ROWS = 2000


class RowError(ValueError):
    pass


def import_hf_file(
    *,
    project: Project,
    fileobj: IO[bytes],
    filename: str,
    text_field: str = "text",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """A Parquet file, a zip of a dataset folder, or JSON/JSONL rows."""
    name = PurePath(filename).name
    head = fileobj.read(4)
    fileobj.seek(0)
    if head.startswith(b"PK"):
        with tempfile.TemporaryDirectory() as folder:
            _unzip_parquet(fileobj, name, Path(folder))
            return import_hf_folder(
                project=project,
                path=Path(folder),
                text_field=text_field,
                progress=progress,
                skip_duplicates=skip_duplicates,
                source=name,
            )
    errors = ErrorList()
    if head == b"PAR1":
        rows = _parquet_rows(fileobj, None, errors, name)
    else:
        body = fileobj.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        fileobj.seek(0)
        fmt = "json" if body[:1] == b"[" else "jsonl"
        rows = ((where, fields, None) for where, fields in json_objects(fileobj, name, fmt, errors))
    return _store(project, rows, name, errors, text_field, skip_duplicates, progress)


def import_hf_folder(
    *,
    project: Project,
    path: Path,
    text_field: str = "text",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
    source: str | None = None,
) -> ImportResult:
    """A `datasets` folder: its Parquet files, split by split (train, validation, test first)."""
    name = source or path.name
    files = sorted(path.glob("data/*.parquet")) + sorted(path.glob("*.parquet"))
    if not files:
        raise ImportFailed([f"{name}: no Parquet files (data/<split>-*.parquet) in the folder."])
    order = {"train": 0, "validation": 1, "test": 2}
    files.sort(key=lambda f: (order.get(f.name.split("-")[0], 3), f.name))
    errors = ErrorList()

    def rows() -> Iterator[tuple[str, dict, dict | None]]:
        for file in files:
            label = file.relative_to(path).as_posix()
            with file.open("rb") as handle:
                yield from _parquet_rows(handle, label, errors, name)

    return _store(project, rows(), name, errors, text_field, skip_duplicates, progress)


def _unzip_parquet(fileobj: IO[bytes], name: str, folder: Path) -> None:
    """The Parquet files of a zipped dataset folder, written under `folder` (names checked)."""
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise ImportFailed([f"{name}: not a valid zip archive."]) from None
    found = 0
    with archive:
        for info in archive.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or not info.filename.endswith(".parquet"):
                continue
            if ".." in parts or info.filename.startswith("/") or parts[0].startswith("__MACOSX"):
                raise ImportFailed([f"{name}: entry {info.filename!r} has an unsafe path."])
            # The folder inside the zip may be the dataset itself or hold it: keep "data/".
            keep = parts[parts.index("data") :] if "data" in parts else parts[-1:]
            target = folder.joinpath(*keep)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            found += 1
    if not found:
        raise ImportFailed([f"{name}: the archive holds no Parquet files."])


def _parquet_rows(
    handle: IO[bytes], label: str | None, errors: ErrorList, name: str
) -> Iterator[tuple[str, dict, dict | None]]:
    """(where, row, the ClassLabel names by column) of a Parquet file, a batch at a time;
    `label` names the file inside a folder ("data/train-….parquet row 3")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle)
        names = _class_names(parquet.schema_arrow)
        number = 0
        for batch in parquet.iter_batches(batch_size=_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield (f"{label} row {number}" if label else f"row {number}"), row, names
    except (pa.ArrowException, OSError, ValueError) as exc:
        where = f"{name} {label}" if label else name
        errors.fail(f"{where}: not a readable Parquet file ({exc}).")


def _class_names(schema) -> dict[str, list[str]]:
    """column → ClassLabel names, from the "huggingface" schema metadata `datasets` writes."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}
    found: dict[str, list[str]] = {}
    for column, feature in features.items() if isinstance(features, dict) else ():
        inner = feature.get("feature", feature) if isinstance(feature, dict) else None
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel":
            found[column] = [str(n) for n in inner.get("names", [])]
    return found


def _store(
    project: Project,
    rows: Iterator[tuple[str, dict, dict | None]],
    name: str,
    errors: ErrorList,
    text_field: str,
    skip_duplicates: bool,
    progress: Progress | None,
) -> ImportResult:
    text_field = (text_field or "text").strip()
    classes = [c.name for c in project.label_classes.order_by("order", "id")]
    counted = {"n": 0}

    def records() -> Iterator[Record]:
        for where, fields, names in rows:
            counted["n"] += 1
            try:
                yield hf_record(
                    fields,
                    where=where,
                    auto_id=f"{name}:{counted['n']}",
                    text=text_field,
                    names=names or {},
                    classes=classes,
                )
            except RowError as exc:
                errors.add(f"{name} {where}: {exc}")

    def report() -> None:
        if progress is not None:
            progress(counted["n"], None)

    return store_text_records(
        project=project,
        records=records(),
        name=name,
        errors=errors,
        default_model=DEFAULT_MODEL,
        skip_duplicates=skip_duplicates,
        report=report,
    )


def hf_record(
    fields: dict[str, Any],
    *,
    where: str,
    auto_id: str,
    text: str,
    names: dict[str, list[str]],
    classes: list[str],
) -> Record:
    if text not in fields:
        columns = ", ".join(repr(k) for k in fields) or "(none)"
        raise RowError(f"no column {text!r}; the columns are: {columns}")
    external_id = auto_id
    for column in ID_COLUMNS:
        value = fields.get(column)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise RowError(f"column {column!r} must be a string or an integer")
            external_id = str(value)
            break
    labels: list[str] = []
    for column in ("label", "labels"):
        if column in fields and fields[column] is not None:
            value = fields[column]
            values = value if isinstance(value, list) else [value]
            labels = [_class(v, column, names.get(column), classes) for v in values]
            labels = [n for n in labels if n is not None]
    metadata: dict[str, Any] = {}
    raw_meta = fields.get("metadata")
    if isinstance(raw_meta, str):
        try:
            raw_meta = json.loads(raw_meta)
        except ValueError:
            raise RowError("column 'metadata' is not JSON") from None
    if isinstance(raw_meta, dict):
        metadata.update(raw_meta)
    elif raw_meta is not None:
        metadata["metadata"] = raw_meta
    skip = {text, *ID_COLUMNS, "label", "labels", "metadata", *SKIPPED_COLUMNS, *VECTOR_COLUMNS}
    skip |= {"prediction", "predictions"}
    metadata.update((k, _jsonable(v, k)) for k, v in fields.items() if k not in skip)
    vector = next((fields[c] for c in VECTOR_COLUMNS if fields.get(c) is not None), None)
    predictions: list[tuple[str, Any]] = []
    if fields.get("prediction") is not None:
        predictions.append(("column 'prediction'", fields["prediction"]))
    if isinstance(fields.get("predictions"), list):
        predictions.extend((f"prediction {i}", p) for i, p in enumerate(fields["predictions"], 1))
    return Record(
        where=where,
        external_id=external_id,
        text=fields[text],
        metadata=metadata,
        answers=[RawAnswer(f"column {'labels' if 'labels' in fields else 'label'}", SOURCE, labels)]
        if labels
        else [],
        predictions=predictions,
        vector=vector,
    )


def _jsonable(value: Any, column: str) -> Any:
    """A Parquet value as JSON can hold it: dates as ISO text, decimals and non-finite floats
    as numbers or null; binary data is refused (an image column in a text dataset)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, bytes | bytearray):
        raise RowError(f"column {column!r} holds binary data, which cannot be metadata")
    if isinstance(value, list):
        return [_jsonable(v, column) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, column) for k, v in value.items()}
    return value


def _class(value: Any, column: str, names: list[str] | None, classes: list[str]) -> str | None:
    """A label value as a class name: an id into the file's ClassLabel names (else the
    project's classes), or a name; None for "no label" (-1)."""
    if isinstance(value, bool):
        raise RowError(f"column {column!r}: {value!r} is not a class")
    if isinstance(value, int):
        if value == -1:
            return None
        table = names if names is not None else classes
        if not 0 <= value < len(table):
            source = "the file's ClassLabel" if names is not None else "the project's classes"
            raise RowError(
                f"column {column!r}: class id {value} is not in {source} (0–{len(table) - 1})"
            )
        return table[value]
    if isinstance(value, str):
        return value
    raise RowError(f"column {column!r}: {value!r} is not a class id or name")
