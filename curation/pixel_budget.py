"""A process-wide budget of pixels being decoded at once.

A decoded image takes 3–4 bytes a pixel whatever its file size: ten 6300×6300 PNGs in a 6.7 KB
zip took a server worker from 250 MiB to 1.16 GiB. Every full decode (checking an upload,
computing features at import or for training) holds its pixel count from this budget while its
frame is in memory, so two uploads at once wait for each other instead of each decoding a
40-megapixel image. Framework-free; the size comes from the `IMAGE_DECODE_PIXELS` setting when
Django is configured.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

#: Default budget: one image at the import limit (IMPORT_MAX_IMAGE_PIXELS) at a time.
DEFAULT_PIXELS = 40_000_000


class PixelBudget:
    """Hands out pixels up to `total`; `hold(n)` waits until n are free. An image bigger than
    the whole budget waits until it can have all of it, so it decodes alone."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a pixel budget must be at least 1 pixel")
        self.total = total
        self.in_use = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = max(1, min(pixels, self.total))
        with self._changed:
            self._changed.wait_for(lambda: self.in_use + need <= self.total)
            self.in_use += need
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= need
                self._changed.notify_all()


_budget: PixelBudget | None = None
_lock = threading.Lock()


def decoding_budget() -> PixelBudget:
    """The process's budget, sized by settings.IMAGE_DECODE_PIXELS on first use."""
    global _budget
    with _lock:
        if _budget is None:
            _budget = PixelBudget(_configured_pixels())
        return _budget


def _configured_pixels() -> int:
    try:
        from django.conf import settings

        if settings.configured:
            return int(getattr(settings, "IMAGE_DECODE_PIXELS", DEFAULT_PIXELS))
    except ImportError:  # used without Django
        pass
    return DEFAULT_PIXELS
