"""Image imports from a folder or a zip archive. Every file is verified with Pillow (the format
comes from the content, never the name); archive entries that would escape the archive
(absolute paths, `..`, symlinks) refuse the whole archive."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO

from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, UnidentifiedImageError

from annotations.content_hash import bytes_hash
from annotations.imports.errors import ErrorList, ImportFailed
from annotations.imports.formats import (
    EXTERNAL_ID_MAX,
    IMAGE_FORMATS,
    DuplicateLog,
    ImportResult,
    Progress,
    require_kind,
)
from annotations.imports.storage import (
    existing_hashes,
    existing_ids,
    files_removed_on_failure,
    one_transaction,
    refresh_statistics_after,
)
from annotations.models import Item, Project
from annotations.services import add_items_counted
from curation.pixel_budget import decoding_budget

IMAGE_BATCH = 200
#: Bytes of images held for a batch's features, whatever the count: 200 large photos would not fit.
IMAGE_BATCH_BYTES = 64 * 1024 * 1024
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini"})


class BadImage(Exception):
    """The bytes are not an acceptable image; the message says why."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def store_image_features(items: list[Item], *, contents: list[bytes]) -> None:
    """`curation.features.store_image_features`, imported at its first call: the
    featurizers load the numerical libraries, which a web process otherwise does without."""
    from curation.features import store_image_features as store

    store(items, contents=contents)


def check_image(data: bytes) -> ImageInfo:
    """Verify that `data` is a complete PNG/JPEG/GIF/WEBP/BMP image within the pixel limit.

    The format is read from the content, never the file name. The pixel limit is checked from
    the header, before anything is decoded; `verify()` checks the structure (CRCs for PNG); a
    second open and `load()` decodes every pixel, which catches truncated files. That decode
    holds its pixels from the process's decoding budget, so concurrent uploads cannot each
    hold a huge frame; a JPEG is decoded at 1/8 scale, which reads all of it too.
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
                if image.format == "JPEG":
                    # Every byte is still decoded (a truncated file still fails), at 1/8 scale.
                    image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                with decoding_budget().hold(image.size[0] * image.size[1]):
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
    skip_duplicates: bool = False,
) -> ImportResult:
    """Import every image in a zip archive; the external id is the path inside the archive.
    An image whose bytes equal an earlier entry's or an item's already in the project is an
    exact duplicate: reported, and left out with `skip_duplicates`.

    Entries with absolute paths, `..` components or symlinks refuse the whole archive, as do
    too many entries or too many uncompressed bytes. Directories and the usual junk
    (`__MACOSX/`, `.DS_Store`, hidden files, Thumbs.db) are skipped.
    """
    name = PurePath(filename).name
    require_kind(project, Project.ItemKind.IMAGE, name)
    with open_archive_sources(fileobj, name) as sources:
        return _store_images(project, name, sources, progress, skip_duplicates)


@contextlib.contextmanager
def open_archive_sources(fileobj: IO[bytes], name: str) -> Iterator[list[_ImageSource]]:
    """The files of a zip archive, checked as an image archive's are, while it is open."""
    if hasattr(fileobj, "seek"):
        fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise ImportFailed([f"{name}: not a valid zip archive."]) from None
    with archive:
        yield _archive_sources(archive, name)


def _archive_sources(archive: zipfile.ZipFile, name: str) -> list[_ImageSource]:
    errors = ErrorList()
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
    max_entries = settings.IMPORT_MAX_ARCHIVE_ENTRIES
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
    *,
    project: Project,
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    skip_duplicates: bool = False,
) -> ImportResult:
    """Import every image under a folder (recursively); the external id is the path relative
    to the folder. Symlinks are refused; hidden files and folders are skipped."""
    root = Path(path)
    name = root.name or str(root)
    require_kind(project, Project.ItemKind.IMAGE, name)
    sources = folder_sources(root)
    return _store_images(project, name, sources, progress, skip_duplicates)


def folder_sources(root: Path) -> list[_ImageSource]:
    """Every file under `root` (recursively, sorted by path), refusing symlinks and skipping
    hidden files and folders."""
    name = root.name or str(root)
    if not root.is_dir():
        raise ImportFailed([f"{root}: not a folder."])
    errors = ErrorList()
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
    return sources


def _file_reader(path: Path) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        try:
            with path.open("rb") as handle:
                return handle.read(limit)
        except OSError as exc:
            raise _ReadError(f"cannot be read ({exc.strerror or exc})") from None

    return read


def _store_images(
    project: Project,
    name: str,
    sources: list[_ImageSource],
    progress: Progress | None,
    skip_duplicates: bool = False,
    *,
    on_batch: Callable[[list[Item]], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> ImportResult:
    """Verify each image, write it to storage and insert the items with their features, all or
    nothing; note (or leave out) exact duplicates by their bytes. `on_batch` sees each batch
    of inserted items and `on_done` runs last, both inside the import's transaction (the
    labelled imports store the items' answers there)."""
    if not sources:
        raise ImportFailed([f"{name}: no image files found."])
    max_bytes = settings.IMPORT_MAX_IMAGE_BYTES
    storage = Item._meta.get_field("image").storage
    errors = ErrorList()
    duplicates = DuplicateLog(skip=skip_duplicates)
    total = len(sources)
    created = 0
    with files_removed_on_failure(storage) as written, one_transaction(name, "paths"):
        taken = existing_ids(project, [s.path for s in sources])
        check_db = Item.objects.filter(project=project).exists()
        contents_seen: dict[int, str] = {}  # content hash → the first entry with it
        seen: set[str] = set()
        batch: list[Item] = []
        contents: list[bytes] = []  # the batch's images, featurized once the items have ids
        held = 0  # bytes in `contents`
        for done, source in enumerate(sources, 1):
            where = f"{name}: {source.path}"
            if progress is not None:
                progress(done, total)  # every image: a big one takes a while
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
                errors.add(f"{where} {exc}" if str(exc).startswith("is ") else f"{where}: {exc}")
                continue
            if errors:
                continue  # failing anyway: keep checking, stop writing
            content_hash = bytes_hash(data)
            if (first_at := contents_seen.get(content_hash)) is not None:
                duplicates.add(source.path, first_at, position=done)
                if duplicates.skip:
                    continue
            else:
                contents_seen[content_hash] = source.path
                same = existing_hashes(project, [content_hash]) if check_db else {}
                if content_hash in same:
                    duplicates.add(
                        source.path, f"existing item {same[content_hash]!r}", position=done
                    )
                    if duplicates.skip:
                        continue
            item = Item(
                project=project,
                external_id=source.path,
                image_format=info.format,
                image_width=info.width,
                image_height=info.height,
                content_hash=content_hash,
            )
            stem = PurePath(source.path).stem or "image"
            item.image.save(stem + IMAGE_FORMATS[info.format], ContentFile(data), save=False)
            written.append(item.image.name)
            batch.append(item)
            contents.append(data)
            held += len(data)
            if len(batch) >= IMAGE_BATCH or held >= IMAGE_BATCH_BYTES:
                created += _insert(batch, contents, on_batch)
                batch, contents, held = [], [], 0
        if errors:
            errors.fail()
        created += _insert(batch, contents, on_batch)
        add_items_counted(project, created)
        if on_done is not None:
            on_done()
        refresh_statistics_after(created)
    return duplicates.result(created=created, source=name)


def _insert(
    batch: list[Item], contents: list[bytes], on_batch: Callable[[list[Item]], None] | None
) -> int:
    Item.objects.bulk_create(batch)
    store_image_features(batch, contents=contents)
    if on_batch is not None and batch:
        on_batch(batch)
    return len(batch)
