"""Which format a file is in, from its first bytes and its first record's keys, when the user
did not say: the file name alone cannot tell a Label Studio export from our own JSON.

- a zip archive: a Hugging Face dataset when it holds Parquet files, COCO when it holds a JSON
  file with `images` and `categories`, Label Studio image tasks with their files, our folders
  export when it has its `labels.csv`, else images (a folder per class is only taken as labels
  when asked: `folders`);
- Parquet (`PAR1`): a Hugging Face dataset file;
- JSON or JSONL: Label Studio when the first record has a `data` object (tasks), doccano when
  it has `text` and a list `label`/`labels`, COCO when it is one object with `images` and
  `categories`, else our own JSON/JSONL; a record that looks like two of them is refused as
  ambiguous, naming both;
- anything else: CSV when the name says so.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePath
from typing import IO, Any

import ijson

from annotations.imports.errors import ImportFailed
from annotations.imports.formats import guess_format
from annotations.imports.json_array import JSONArrayError, NestingGuard, iter_json_array
from annotations.imports.text import MAX_JSON_DEPTH

#: Every format `import_file` takes.
ALL_FORMATS = ("csv", "json", "jsonl", "labelstudio", "doccano", "hf", "coco", "folders", "zip")
_HEAD = 256 * 1024


def sniff_format(fileobj: IO[bytes], filename: str) -> str:
    """The format of an uploaded file (see the module); the file is left at its start."""
    name = PurePath(filename).name
    head = fileobj.read(_HEAD)
    fileobj.seek(0)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(fileobj)
    if head.startswith(b"PAR1"):
        return "hf"
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body[:1] in (b"[", b"{"):
        kind, first = _first_record(body)
        if kind == "object" and isinstance(first, dict) and _is_coco(first):
            return "coco"
        container = "json" if kind == "array" else "jsonl"
        if not isinstance(first, dict):
            first = {}
        tools = [
            t for t, test in (("labelstudio", _is_ls), ("doccano", _is_doccano)) if test(first)
        ]
        if len(tools) > 1:
            raise ImportFailed(
                [
                    f"{name}: the first record looks like both {' and '.join(tools)} data; "
                    "choose the format."
                ]
            )
        if tools:
            return tools[0]
        try:  # our own JSON or JSONL: the name says which, as it always did
            return guess_format(name)
        except ImportFailed:
            return container
    try:
        return guess_format(name)
    except ImportFailed:
        raise ImportFailed(
            [
                f"{name}: cannot tell the format from the file name or its content; choose one of "
                f"{', '.join(ALL_FORMATS)}."
            ]
        ) from None


def sniff_folder(path: Path) -> str:
    """The format of a folder: `hf` (Parquet files, or a dataset card with `dataset_info`),
    `coco` (a JSON file with `images` and `categories` at its top), `labelstudio` (a JSON file
    of tasks, beside their images), else `images`."""
    if next(path.glob("*.parquet"), None) or next(path.glob("data/*.parquet"), None):
        return "hf"
    card = path / "README.md"
    if card.is_file() and b"dataset_info" in card.read_bytes()[:_HEAD]:
        return "hf"
    for candidate in sorted(path.glob("*.json")):
        with candidate.open("rb") as handle:
            kind, first = _first_record(handle.read(_HEAD).lstrip(b"\xef\xbb\xbf \t\r\n"))
        if kind == "object" and isinstance(first, dict) and _is_coco(first):
            return "coco"
        if isinstance(first, dict) and _is_ls(first):
            return "labelstudio"  # image tasks with their files
    return "images"


def _first_record(body: bytes) -> tuple[str, Any]:
    """("array", its first element) for a JSON array, else ("object"/"lines", the first
    object): an object that fills the whole head is one document, else JSONL's first line.
    Nesting deeper than the importers allow is never handed to the parser (see
    `json_array.NestingGuard`): such a file is left to the importer, which refuses it."""
    if NestingGuard(limit=MAX_JSON_DEPTH).deepest(body) > MAX_JSON_DEPTH:
        return ("array" if body[:1] == b"[" else "object"), None
    if body[:1] == b"[":
        try:
            for value in iter_json_array([body], max_depth=MAX_JSON_DEPTH):
                return "array", value
        except JSONArrayError:
            pass
        return "array", None
    first_line = body.split(b"\n", 1)[0]
    try:
        return ("lines" if b"\n" in body.strip() else "object"), json.loads(first_line)
    except (ValueError, RecursionError):
        pass
    # One document over several lines, perhaps cut short by the head: its top-level keys.
    keys = {}
    try:
        for prefix, event, value in ijson.parse(body):
            if prefix == "" and event == "map_key":
                keys[value] = True
    except (ijson.JSONError, ijson.IncompleteJSONError, ValueError):
        pass
    return "object", keys


def _is_ls(record: dict) -> bool:
    return isinstance(record.get("data"), dict)


def _is_doccano(record: dict) -> bool:
    return "text" in record and any(isinstance(record.get(k), list) for k in ("label", "labels"))


def _is_coco(record: dict) -> bool:
    return "images" in record and "categories" in record


def _zip_kind(fileobj: IO[bytes]) -> str:
    """`hf` for a zip with Parquet files, `coco` with a COCO JSON file, `folders` for our
    folders export (`labels.csv` beside split folders), else `zip` (images)."""
    try:
        with zipfile.ZipFile(fileobj) as archive:
            infos = archive.infolist()
            names = [i.filename for i in infos]
            if any(n.endswith(".parquet") for n in names):
                return "hf"
            for info in infos:
                if info.filename.lower().endswith(".json") and info.file_size < 512 * 1024**2:
                    with archive.open(info) as handle:
                        head = handle.read(_HEAD)
                    kind, first = _first_record(head.lstrip(b"\xef\xbb\xbf \t\r\n"))
                    if kind == "object" and isinstance(first, dict) and _is_coco(first):
                        return "coco"
                    if isinstance(first, dict) and _is_ls(first):
                        return "labelstudio"  # image tasks with their files
            if "labels.csv" in names and any(n.startswith(("train/", "test/")) for n in names):
                return "folders"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
        return "zip"  # the image import says what is wrong with it
    finally:
        fileobj.seek(0)
    return "zip"
