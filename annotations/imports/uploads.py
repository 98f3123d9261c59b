"""How big a file may be uploaded through the web. A big import holds a request (and a
server worker) for minutes, so uploads over `IMPORT_MAX_UPLOAD_BYTES` are refused before
anything is parsed, and the message points to `manage.py import_items`, which has no limit.

`SizeLimitUploadHandler` comes first in `FILE_UPLOAD_HANDLERS`: for a request over the limit
it skips every file (nothing is written to memory or a temporary file) and marks the request;
the page then answers 413 with the message from `upload_refusal`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

_MARK = "upload_refused_size"


class SizeLimitUploadHandler(FileUploadHandler):
    """Skips the files of a request larger than IMPORT_MAX_UPLOAD_BYTES (judged by its
    Content-Length, and by the bytes actually received), so later handlers never store them."""

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> None:
        self.request_length = content_length  # (new_file sets content_length per file)
        self.too_large = content_length > settings.IMPORT_MAX_UPLOAD_BYTES

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        if getattr(self, "too_large", False):
            self._refuse(self.request_length)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > settings.IMPORT_MAX_UPLOAD_BYTES:
            self._refuse(start + len(raw_data))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file

    def _refuse(self, size: int) -> None:
        if self.request is not None:
            setattr(self.request, _MARK, size)
        raise SkipFile


def upload_refusal(request: HttpRequest) -> str | None:
    """Why the request's files were refused (too large), or None. Call after reading FILES."""
    size = getattr(request, _MARK, None)
    if size is None:
        return None
    limit = settings.IMPORT_MAX_UPLOAD_BYTES
    return (
        f"The upload is {filesizeformat(size)}, over the limit of {filesizeformat(limit)} "
        "for files imported through the web page; nothing was imported. Import it on the "
        "server instead: manage.py import_items <project id or name> <file>"
    )
