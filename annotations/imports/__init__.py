"""Import items into a project: text from CSV, JSON and JSONL files, images from a folder or a
zip archive, and other tools' data with its labels (Label Studio, doccano, Hugging Face, COCO,
a folder per class).

Every import is all-or-nothing: the rows go in inside one transaction, and image files written
to storage are deleted again if anything fails, so a bad file never leaves half an import
behind. Problems are collected with their location ("reviews.csv line 14: …") and raised
together as `ImportFailed`, so a user fixes the file once rather than once per error. Views,
management commands and the API all call these functions.

The package's modules: `errors` (ImportFailed and the located-error list), `formats` (what
can be imported into which project), `sniff` (which format a file is in), `text`
(CSV/JSON/JSONL), `images` (folders and zip archives, verified with Pillow), `storage` (the bulk
insert and the all-or-nothing transaction), `records` (items with answers, predictions and
vectors), and one module per other tool: `labelstudio`, `doccano`, `hf`, `coco` (also folders
per class). Import from the package itself; the names below are its public API.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
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
from annotations.imports.sniff import ALL_FORMATS, sniff_folder, sniff_format
from annotations.imports.storage import ANALYZE_AFTER, insert_text_items
from annotations.imports.text import MAX_JSON_DEPTH, TEXT_BATCH, import_text_items
from annotations.models import Project

__all__ = [
    "ALL_FORMATS",
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
    "import_folder",
    "import_image_archive",
    "import_image_folder",
    "import_text_items",
    "insert_text_items",
    "sniff_folder",
    "sniff_format",
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
    """Import one uploaded file in any format of `ALL_FORMATS`: ours (CSV/JSON/JSONL text, a zip
    of images), Label Studio tasks, doccano JSONL, a Hugging Face dataset file, a COCO archive
    or a zip with a folder per class. Without `fmt`, the format is read from the content
    (`sniff_format`). Exact duplicates are reported in the result, and left out with
    `skip_duplicates`."""
    name = PurePath(filename).name
    if fmt:
        fmt = fmt.strip().lower()
        if fmt not in ALL_FORMATS:
            raise ImportFailed([f"{name}: unknown format {fmt!r}; use {', '.join(ALL_FORMATS)}."])
    else:
        fmt = sniff_format(fileobj, filename)
    common = {"project": project, "fileobj": fileobj, "filename": filename, "progress": progress}
    common["skip_duplicates"] = skip_duplicates
    if fmt == "zip":
        return import_image_archive(**common)
    if fmt == "labelstudio" and project.item_kind == Project.ItemKind.IMAGE:
        from annotations.imports.images import open_archive_sources
        from annotations.imports.labelstudio import import_labelstudio_images

        with open_archive_sources(fileobj, name) as sources:
            return import_labelstudio_images(
                **_but(common, "fileobj", "filename"), sources=sources, name=name
            )
    if fmt in ("labelstudio", "doccano"):
        container = _container(fileobj, filename)
        if container == "csv" and fmt == "labelstudio":
            raise ImportFailed([f"{name}: Label Studio tasks are JSON, not CSV."])
        if fmt == "labelstudio":
            from annotations.imports.labelstudio import import_labelstudio

            return import_labelstudio(**common, fmt=container, text_field=text_field)
        from annotations.imports.doccano import import_doccano

        return import_doccano(**common, fmt=container, text_field=text_field)
    if fmt == "hf":
        from annotations.imports.hf import import_hf_file

        return import_hf_file(**common, text_field=text_field)
    if fmt in ("coco", "folders"):
        from annotations.imports.coco import import_labelled_images

        return import_labelled_images(**common, fmt=fmt)
    return import_text_items(**common, fmt=fmt, text_field=text_field, id_field=id_field)


def import_folder(
    *,
    project: Project,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    text_field: str = "text",
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Import a folder: a Hugging Face dataset folder (`hf`), images with a COCO file (`coco`),
    a folder per class (`folders`) or images (`images`, the default)."""
    fmt = fmt or sniff_folder(Path(path))
    common = {"project": project, "progress": progress, "skip_duplicates": skip_duplicates}
    if fmt == "hf":
        from annotations.imports.hf import import_hf_folder

        return import_hf_folder(**common, path=Path(path), text_field=text_field)
    if fmt in ("coco", "folders"):
        from annotations.imports.coco import import_labelled_folder

        return import_labelled_folder(**common, path=Path(path), fmt=fmt)
    if fmt == "labelstudio":
        from annotations.imports.images import folder_sources
        from annotations.imports.labelstudio import import_labelstudio_images

        return import_labelstudio_images(
            **common, sources=folder_sources(Path(path)), name=Path(path).name
        )
    if fmt not in ("images", "zip"):
        raise ImportFailed([f"{Path(path).name}: a folder cannot be imported as {fmt}."])
    return import_image_folder(**common, path=path)


def _but(options: dict, *names: str) -> dict:
    return {k: v for k, v in options.items() if k not in names}


def _container(fileobj: IO[bytes], filename: str) -> str:
    """The container of a tool's file: "json" (an array), "jsonl" (objects), else "csv"."""
    head = fileobj.read(4096)
    fileobj.seek(0)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return {b"[": "json", b"{": "jsonl"}.get(first, "csv")
