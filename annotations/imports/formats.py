"""What can be imported and into which project, and what an import reports back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from annotations.imports.errors import ImportFailed
from annotations.models import Item, Project

#: Text formats by name and the file extensions that imply them.
TEXT_FORMATS = {"csv": (".csv",), "json": (".json",), "jsonl": (".jsonl", ".ndjson")}
#: Image formats accepted (Pillow's names), with the extension the stored file gets. Anything
#: else — SVG, HTML, TIFF, PDF — is refused whatever the file is called.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
EXTERNAL_ID_MAX = Item._meta.get_field("external_id").max_length

#: Called as progress(done, total) while importing; total is None when unknown. For text files
#: the unit is bytes read, for images the number of images.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ImportResult:
    created: int
    source: str


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


def require_kind(project: Project, kind: str, name: str) -> None:
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
