"""Export one dataset version to disk: JSON Lines, CSV, a Hugging Face dataset folder
(`curation.hf_export`), or image folders per split and class.

Every export reads only the version file's header and rows (`curation.dataset_versions`), so
it says exactly what the version holds, whatever happened to the project since. Rows stream
through (a million items in constant memory) and nothing depends on the clock or on the
machine: the same version always exports to the same bytes.

An export is written next to its destination under a temporary name and renamed into place
when complete, so a failed export leaves nothing behind and a reader never sees half a file.
A folder export refuses a destination that holds anything: it never mixes its files with
others or silently replaces them.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from django.utils.text import slugify

from annotations.exports import safe_cell
from curation.hf_export import hf_export
from curation.version_rows import (
    NOTHING_LABELLED,
    ExportError,
    class_ids,
    image_bytes,
    is_image,
    is_multi_label,
    labelled_ids,
    row_split,
)

__all__ = [
    "FORMATS",
    "STREAM_FORMATS",
    "ExportError",
    "class_folder_names",
    "safe_file_stem",
    "version_export",
    "version_export_stream",
]

FORMATS = ("jsonl", "csv", "hf", "folders")
#: The formats that are one file, which can also be streamed as an HTTP download.
STREAM_FORMATS = ("jsonl", "csv")
#: Item lines per chunk of a streamed export.
CHUNK_ROWS = 1000
# Then "meta.<key>" for every metadata key. "text" is "image" (the stored file's name relative
# to MEDIA_ROOT) in image projects.
CSV_COLUMNS = (
    "item_id",
    "external_id",
    "text",
    "split",
    "status",
    "gold_labels",
    "gold_source",
    "gold_agreement",
    "annotator",
    "labels",
    "skipped",
    "created_at",
    "updated_at",
)
LABELS_CSV_COLUMNS = ("split", "class", "file", "external_id", "item_id")
# Names Windows refuses for a file whatever its extension.
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{port}{n}" for port in ("com", "lpt") for n in range(1, 10)]
)
_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")
_STEM_CHARS = 100


def version_export(
    header: dict,
    rows: Callable[[], Iterator[dict]],
    fmt: str,
    output: Path,
    *,
    media_root: Path,
    version_name: str,
    content_hash: str,
) -> list[Path]:
    """Write the version in `fmt` to `output` (a file for jsonl and csv, which replaces an
    existing file; else a folder, new or empty) and return the files written, sorted.

    `rows` gives a fresh iterator over the item rows at each call; the CSV reads them twice
    (its metadata columns first). `media_root` is where image projects' files are read.
    """
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if fmt == "folders" and not is_image(header):
        raise ExportError(
            "The folders export is for image projects: this is a text project "
            "(use jsonl, csv or hf)."
        )
    if fmt in STREAM_FORMATS:
        if output.is_dir():
            raise ExportError(f"{output} is a folder: a {fmt} export is written to a file.")
        _write_file(output, version_export_stream(header, rows, fmt))
        return [output]
    if output.exists() and not output.is_dir():
        raise ExportError(f"{output} is a file: a {fmt} export is written to a folder.")
    if output.is_dir() and any(output.iterdir()):
        raise ExportError(
            f"{output} is not empty: a {fmt} export needs a new or empty folder, so that it "
            "neither mixes with nor replaces other files."
        )
    if fmt == "hf":
        return _write_folder(
            output,
            lambda folder: hf_export(
                header,
                rows,
                folder,
                media_root=media_root,
                version_name=version_name,
                content_hash=content_hash,
            ),
        )
    return _write_folder(output, lambda folder: _image_folders(header, rows, folder, media_root))


def version_export_stream(
    header: dict, rows: Callable[[], Iterator[dict]], fmt: str
) -> Iterator[bytes]:
    """The jsonl or csv export as chunks of bytes, for a streaming download: the same bytes
    as the file `version_export` writes."""
    if fmt == "jsonl":
        return _encoded(_jsonl_lines(rows))
    if fmt == "csv":
        return _encoded(_csv_lines(header, rows))
    raise ExportError(f"Only {' and '.join(STREAM_FORMATS)} exports can be streamed, not {fmt!r}.")


def _encoded(lines: Iterable[str]) -> Iterator[bytes]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= CHUNK_ROWS:
            yield "".join(chunk).encode("utf-8")
            chunk = []
    if chunk:
        yield "".join(chunk).encode("utf-8")


def _jsonl_lines(rows: Callable[[], Iterator[dict]]) -> Iterator[str]:
    """Each item row as the version file holds it, one JSON object a line."""
    for row in rows():
        yield json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def _csv_lines(header: dict, rows: Callable[[], Iterator[dict]]) -> Iterator[str]:
    """A header, then one line per (item, answer), oldest answer first; an item nobody
    answered gets one line with empty answer cells. Labels are joined by "|"; metadata values
    that are not text are written as JSON. Every cell a person typed (texts, ids, names,
    metadata and its keys) is neutralised against spreadsheet formula injection."""
    keys = sorted({key for row in rows() for key in _metadata(row)})
    image = is_image(header)
    columns = ["image" if image and c == "text" else c for c in CSV_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: list[Any]) -> str:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line([*columns, *(safe_cell(f"meta.{key}") for key in keys)])
    for row in rows():
        gold = row.get("gold")
        labels = gold.get("labels") if gold else None
        agreement = gold.get("agreement") if gold else None
        head = [
            row["item_id"],
            safe_cell(row["external_id"]),
            safe_cell(row["image"] if image else row["text"]),
            row["split"],
            row["status"],
            safe_cell("|".join(labels)) if labels is not None else "",
            gold["source"] if gold else "",
            "" if agreement is None else repr(float(agreement)),
        ]
        metadata = _metadata(row)
        meta = [_meta_cell(metadata.get(key)) for key in keys]
        if not row["answers"]:
            yield line([*head, "", "", "", "", "", *meta])
        for answer in row["answers"]:
            answered = [
                safe_cell(answer["annotator"]),
                safe_cell("|".join(answer["labels"])),
                "true" if answer["skipped"] else "false",
                answer["created_at"],
                answer["updated_at"],
            ]
            yield line([*head, *answered, *meta])


def _metadata(row: dict) -> dict:
    metadata = row.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _meta_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_cell(value)
    return safe_cell(json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")))


def _image_folders(
    header: dict, rows: Callable[[], Iterator[dict]], folder: Path, media_root: Path
) -> None:
    """`<split>/<class>/<file>` for every labelled image (a multi-label one in each of its
    classes' folders), and `labels.csv` mapping each file back to its item and class."""
    ids = class_ids(header)
    multi = is_multi_label(header)
    names = [c["name"] for c in header["classes"]]
    class_folders = class_folder_names(names)
    made: set[Path] = set()
    labelled = 0
    with (folder / "labels.csv").open("w", encoding="utf-8", newline="") as labels_file:
        writer = csv.writer(labels_file, lineterminator="\r\n")
        writer.writerow(LABELS_CSV_COLUMNS)
        for row in rows():
            labels = labelled_ids(row, ids, multi=multi)
            if not labels:
                continue
            labelled += 1
            split = row_split(row)
            data = image_bytes(media_root, row)
            stem = safe_file_stem(row["external_id"])
            suffix = PurePosixPath(row["image"]).suffix.lower()
            extension = suffix if _EXTENSION.fullmatch(suffix) else ""
            for class_id in labels:
                target_dir = folder / split / class_folders[class_id]
                if target_dir not in made:
                    target_dir.mkdir(parents=True, exist_ok=True)
                    made.add(target_dir)
                target = target_dir / f"{stem}{extension}"
                if target.exists():
                    # "--" never occurs in a stem, and item ids are unique: no further clash.
                    target = target_dir / f"{stem}--{row['item_id']}{extension}"
                with target.open("xb") as image_file:
                    image_file.write(data)
                writer.writerow(
                    [
                        split,
                        safe_cell(names[class_id]),
                        target.relative_to(folder).as_posix(),
                        safe_cell(row["external_id"]),
                        row["item_id"],
                    ]
                )
    if not labelled:
        raise ExportError(NOTHING_LABELLED)


def safe_file_stem(name: str) -> str:
    """A file name stem valid on any file system and inside its folder: lower-case ASCII
    letters, digits, "_" and single "-" (Django's slugify), at most 100 characters, never a
    name Windows reserves, never empty. Different names may share a stem; callers add an id."""
    stem = slugify(name)[:_STEM_CHARS].strip("-_") or "item"
    # A trailing "_" cannot come out of slugify, so it cannot collide with another stem.
    return f"{stem}_" if stem in _WINDOWS_RESERVED else stem


def class_folder_names(names: list[str]) -> list[str]:
    """A folder name per class, in schema order: its safe stem, or, when that is taken by an
    earlier class (or the name has no letters or digits), the stem followed by "--" and the
    class id, unique because no stem holds "--"."""
    folders: list[str] = []
    for class_id, name in enumerate(names):
        stem = safe_file_stem(name)
        if stem in folders or not slugify(name):
            stem = f"{stem}--{class_id}"
        folders.append(stem)
    return folders


def _partial(output: Path) -> Path:
    """A temporary name beside `output`, unique to this export (two may run at once)."""
    return output.with_name(f".{output.name}.{secrets.token_hex(6)}.partial")


def _write_file(output: Path, chunks: Iterable[bytes]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(output)
    try:
        with partial.open("xb") as file:
            for chunk in chunks:
                file.write(chunk)
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _write_folder(output: Path, write: Callable[[Path], None]) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(output)
    partial.mkdir()
    try:
        write(partial)
        if output.is_dir():
            output.rmdir()  # still empty, or this fails and nothing is replaced
        partial.rename(output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return sorted(path for path in output.rglob("*") if path.is_file())
