"""What makes two items the same: a text's normalised form (case folded, Unicode NFKC,
whitespace collapsed) or an image's bytes, hashed to 64 bits and stored on the item
(`Item.content_hash`), so an import finds exact duplicates among a million items with one
index lookup per batch instead of reading the project's texts.

64 bits of SHA-256: two different contents share a hash with probability about n²/2⁶⁵, one in
ten million for a million items. Plain Python (no NumPy), so imports in a web process can use
it; `curation.duplicates` groups by the same hash.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACES = re.compile(r"\s+")

__all__ = ["bytes_hash", "normalise_text", "text_hash"]


def normalise_text(text: str) -> str:
    """The form two texts share when they differ only in case, Unicode compatibility forms
    (full-width letters, ligatures) or whitespace."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def bytes_hash(data: bytes) -> int:
    """A signed 64-bit integer (a PostgreSQL bigint) from the SHA-256 of `data`."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


def text_hash(text: str) -> int:
    """The hash of the text's normalised form."""
    return bytes_hash(normalise_text(text).encode("utf-8"))
