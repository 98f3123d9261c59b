"""What can be imported and into which project, and what an import reports back."""

from __future__ import annotations

import heapq
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
#: Exact duplicates listed in an import's result; the rest are counted.
MAX_DUPLICATES_SHOWN = 50

#: Called as progress(done, total) while importing; total is None when unknown. For text files
#: the unit is bytes read, for images the number of images.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class ImportResult:
    """What an import did. `duplicates` locates the first exact duplicates found (a line or
    entry whose normalised text or image bytes equal an earlier one's in the file or an item
    already in the project), `duplicate_count` counts all of them, and `skipped` how many of
    them were left out (all, when the import was asked to skip duplicates)."""

    created: int
    source: str
    duplicates: tuple[str, ...] = ()
    duplicate_count: int = 0
    skipped: int = 0

    @property
    def duplicate_messages(self) -> list[str]:
        """`duplicates`, ending with "… and N more" when some were left out."""
        more = self.duplicate_count - len(self.duplicates)
        if more <= 0:
            return list(self.duplicates)
        return [*self.duplicates, f"… and {more:,} more duplicate{'s' if more != 1 else ''}"]

    def summary(self, *, into: str | None = None) -> str:
        """One sentence for a page or a command: what was imported (from the file, or `into`
        the named project) and the duplicates."""
        where = f"into {into!r}" if into is not None else f"from {self.source}"
        text = f"Imported {self.created:,} item{'s' if self.created != 1 else ''} {where}."
        if self.duplicate_count:
            count = self.duplicate_count
            text += f" {count:,} exact duplicate{'s' if count != 1 else ''}"
            text += " skipped." if self.skipped else " imported anyway."
        return text


class DuplicateLog:
    """The exact duplicates an import meets: the MAX_DUPLICATES_SHOWN first in the file
    located, all counted; `skip` says whether they are left out of the import. (Duplicates of
    the project's items are found a batch later than those within the file, hence the order
    kept by position.)"""

    def __init__(self, *, skip: bool) -> None:
        self.skip = skip
        self._first: list[tuple[int, int, str]] = []  # a max-heap by position: (-position, …)
        self.total = 0

    def add(self, where: str, of: str, *, position: int) -> None:
        self.total += 1
        entry = (-position, self.total, f"{where} duplicates {of}")
        if len(self._first) < MAX_DUPLICATES_SHOWN:
            heapq.heappush(self._first, entry)
        elif -position > self._first[0][0]:
            heapq.heapreplace(self._first, entry)

    @property
    def shown(self) -> list[str]:
        return [message for *_, message in sorted(self._first, reverse=True)]

    def result(self, *, created: int, source: str) -> ImportResult:
        return ImportResult(
            created=created,
            source=source,
            duplicates=tuple(self.shown),
            duplicate_count=self.total,
            skipped=self.total if self.skip else 0,
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
