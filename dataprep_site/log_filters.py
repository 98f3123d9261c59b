"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """Drop the traceback from records about 4xx responses.

    Django logs a refused request (PermissionDenied → 403, a bad request → 400) with the
    exception attached, so every ordinary "you may not" printed a 30-line traceback. The one
    line saying what and where is enough; 5xx records keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
