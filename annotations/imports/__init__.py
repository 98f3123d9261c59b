"""Import items into a project: text from CSV, JSON and JSONL files, images from a folder or a
zip archive.

Every import is all-or-nothing: the rows go in inside one transaction, and image files written
to storage are deleted again if anything fails, so a bad file never leaves half an import
behind. Problems are collected with their location ("reviews.csv line 14: …") and raised
together as `ImportFailed`, so a user fixes the file once rather than once per error. Views,
management commands and the API all call these functions.

The package's modules: `errors` (ImportFailed and the located-error list), `formats` (what
can be imported into which project), `text` (CSV/JSON/JSONL), `images` (folders and zip
archives, verified with Pillow) and `storage` (the bulk insert and the all-or-nothing
transaction). Import from the package itself; the names below are its public API.
"""

from __future__ import annotations

from typing import IO

from annotations.imports.errors import MAX_ERRORS, ImportFailed
from annotations.imports.formats import (
    EXTERNAL_ID_MAX,
    IMAGE_FORMATS,
    TEXT_FORMATS,
    ImportResult,
    Progress,
    guess_format,
)
from annotations.imports.images import (
    IMAGE_BATCH,
    JUNK_NAMES,
    BadImage,
    ImageInfo,
    check_image,
    import_image_archive,
    import_image_folder,
)
from annotations.imports.storage import ANALYZE_AFTER, insert_text_items
from annotations.imports.text import MAX_JSON_DEPTH, TEXT_BATCH, import_text_items
from annotations.models import Project

__all__ = [
    "ANALYZE_AFTER",
    "EXTERNAL_ID_MAX",
    "IMAGE_BATCH",
    "IMAGE_FORMATS",
    "JUNK_NAMES",
    "MAX_ERRORS",
    "MAX_JSON_DEPTH",
    "TEXT_BATCH",
    "TEXT_FORMATS",
    "BadImage",
    "ImageInfo",
    "ImportFailed",
    "ImportResult",
    "Progress",
    "check_image",
    "guess_format",
    "import_file",
    "import_image_archive",
    "import_image_folder",
    "import_text_items",
    "insert_text_items",
]


def import_file(
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
    """Import one uploaded file: a zip archive of images or a CSV/JSON/JSONL text file.
    Exact duplicates are reported in the result, and left out with `skip_duplicates`."""
    if guess_format(filename, fmt) == "zip":
        return import_image_archive(
            project=project,
            fileobj=fileobj,
            filename=filename,
            progress=progress,
            skip_duplicates=skip_duplicates,
        )
    return import_text_items(
        project=project,
        fileobj=fileobj,
        filename=filename,
        fmt=fmt,
        text_field=text_field,
        id_field=id_field,
        progress=progress,
        skip_duplicates=skip_duplicates,
    )
