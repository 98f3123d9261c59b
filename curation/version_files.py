"""The dataset version file: gzip-compressed JSON Lines, content-addressed, written atomically
and read only after its checksum matches (the format: docs/dataset-versions.md).

Line 1 is a header (format, project, label schema, split rule, item count); then one line per
item in id order. Lines are canonical JSON (sorted keys, no spaces), so the content hash (the
SHA-256 of the uncompressed lines) is the same for the same data, and the gzip stream carries
no time or file name, so the same content gives the same bytes.

The file's own SHA-256 is kept on the version's row: a file that does not match (edited,
truncated, bit rot) is refused with `VersionFileError`, never served.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

FORMAT = "dataprepops-dataset"
FORMAT_VERSION = 1
COMPRESS_LEVEL = 6
_READ_BLOCK = 1 << 20

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "VersionFileError",
    "WrittenFile",
    "canonical_line",
    "file_read",
    "file_verify",
    "file_write",
]


class VersionFileError(Exception):
    """A version file that is missing, does not match its checksum or cannot be read."""


class WrittenFile(NamedTuple):
    path: Path
    content_hash: str  # SHA-256 of the uncompressed lines
    file_sha256: str  # SHA-256 of the file's bytes
    size: int


def canonical_line(record: dict[str, Any]) -> bytes:
    return (
        json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
    ).encode()


def file_write(folder: Path, header: dict[str, Any], rows: Iterable[dict[str, Any]]) -> WrittenFile:
    """Write `header` and `rows` to `folder / <content hash>.jsonl.gz` and return what to store.

    The lines go to a temporary file in the same folder, which is synced and renamed into
    place only when complete, so a crash leaves no half-written version under its final name.
    A file with the same content already there is kept (the same bytes, by construction)."""
    folder.mkdir(parents=True, exist_ok=True)
    content = hashlib.sha256()
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=".writing-", suffix=".jsonl.gz")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=COMPRESS_LEVEL, mtime=0
            ) as stream:
                for record in _with_header(header, rows):
                    line = canonical_line(record)
                    content.update(line)
                    stream.write(line)
            raw.flush()
            os.fsync(raw.fileno())
        final = folder / f"{content.hexdigest()}.jsonl.gz"
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    return WrittenFile(final, content.hexdigest(), _sha256_of(final), final.stat().st_size)


def _with_header(header: dict[str, Any], rows: Iterable[dict[str, Any]]) -> Iterator[dict]:
    yield {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    yield from rows


def file_verify(path: Path, sha256: str) -> None:
    """Raise `VersionFileError` unless `path` exists and its bytes hash to `sha256`."""
    try:
        actual = _sha256_of(path)
    except FileNotFoundError:
        raise VersionFileError(f"The version file {path.name} is missing.") from None
    if actual != sha256:
        raise VersionFileError(
            f"The version file {path.name} does not match its checksum (expected "
            f"{sha256[:12]}…, found {actual[:12]}…): it was changed or damaged, so it is not "
            "served."
        )


def file_read(path: Path, sha256: str) -> tuple[dict[str, Any], Callable[[], Iterator[dict]]]:
    """(header, rows) of a verified version file; `rows()` walks the item lines afresh on each
    call, in constant memory. The checksum is checked first, so nothing of a damaged file is
    read."""
    file_verify(path, sha256)
    lines = _lines(path)
    try:
        header = json.loads(next(lines))
    except (StopIteration, ValueError) as exc:
        raise VersionFileError(f"The version file {path.name} has no readable header.") from exc
    finally:
        lines.close()
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise VersionFileError(f"{path.name} is not a version file this app can read.")

    def rows() -> Iterator[dict]:
        walk = _lines(path)
        try:
            next(walk, None)
            for line in walk:
                yield json.loads(line)
        finally:
            walk.close()

    return header, rows


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with gzip.open(path, "rb") as stream:
            yield from stream
    except (OSError, EOFError, zlib.error) as exc:
        raise VersionFileError(f"The version file {path.name} cannot be read: {exc}") from exc


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
