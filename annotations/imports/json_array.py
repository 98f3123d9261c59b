"""Reading a JSON array one element at a time, for imports of files of any size.

`json.loads` on a 188 MB upload held the GIL for seconds (the server's health check timed out
and the worker was killed) and needed ten times the file in memory. Here ijson's C parser
(yajl) is fed the file a line at a time (long lines in 64 KiB pieces), so memory stays at a
chunk and what one piece holds, other threads get the GIL between pieces, and a syntax error
is located by line (and column when yajl's context pinpoints it). Framework-free: the import
code turns `JSONArrayError` into its messages.

ijson builds a "prefix" string for every event whose length grows with the nesting depth, so
a small file of nested brackets costs time and memory quadratic in its depth (100,000 levels
in 200 KB exhaust any server). `NestingGuard` counts the depth of each chunk with regular
expressions and C-level byte operations before the parser sees it, and refuses the file past
a limit.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import ijson

#: Characters that may start a JSON value, and what to call the value.
_KINDS = {
    ord("{"): "an object",
    ord('"'): "a string",
    ord("t"): "a boolean",
    ord("f"): "a boolean",
    ord("n"): "null",
    **{ord(c): "a number" for c in "-0123456789"},
}


class JSONArrayError(Exception):
    """The file is not a JSON array that can be read. `line`/`column` (1-based; column None
    when unknown) locate the problem; `record` is the 1-based index of the element being read,
    or None before the array starts."""

    def __init__(
        self, message: str, *, line: int | None, column: int | None, record: int | None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.record = record


class NotAnArray(JSONArrayError):
    """The document is valid so far but its top-level value is not an array."""


class NotUTF8(JSONArrayError):
    """A byte sequence that is not UTF-8; `byte` is the first offending byte."""

    def __init__(self, *, line: int, column: int, byte: int) -> None:
        super().__init__("not UTF-8", line=line, column=column, record=None)
        self.byte = byte


class UTF16(JSONArrayError):
    """The file is UTF-16 (it starts with a UTF-16 byte order mark)."""


class TooDeep(JSONArrayError):
    """An element is nested deeper than allowed."""


def iter_json_array(chunks: Iterable[bytes], *, max_depth: int) -> Iterator[Any]:
    """Yield the elements of the JSON array in `chunks` (bytes, UTF-8, an optional BOM).

    Raises NotAnArray for another top-level value, TooDeep for elements nested deeper than
    `max_depth` containers, NotUTF8, or JSONArrayError for a syntax error or a truncated file.
    An empty (or all-whitespace) input yields nothing and raises nothing: the caller says "empty".
    Numbers come as int or float; NaN, Infinity and numbers too large for a float are errors.
    """
    parsed = ijson.sendable_list()
    parser = ijson.items_coro(parsed, "item", use_float=True)
    guard = NestingGuard(limit=max_depth + 1)  # + 1: the array itself
    count = 0
    started = False
    line, column = 1, 0  # where the next piece starts (column: characters before it)
    for chunk in _utf8_chunks(chunks):
        if not started:
            first = chunk.lstrip()
            if not first:
                line += chunk.count(b"\n")
                continue
            if first[0] != ord("["):
                at = line + chunk.count(b"\n", 0, len(chunk) - len(first))
                kind = _KINDS.get(first[0])
                if kind is None:
                    raise JSONArrayError(
                        "malformed JSON (this is not the start of a JSON value)",
                        line=at,
                        column=None,
                        record=None,
                    )
                raise NotAnArray(f"got {kind}", line=at, column=None, record=None)
            started = True
        pieces = _pieces(chunk)
        # Records before the first piece that nests too deep are read (and counted) first.
        too_deep = _deep_piece(guard, pieces) if guard.deepest(chunk) > guard.limit else -1
        for index, data in enumerate(pieces):
            if index == too_deep:
                raise TooDeep(
                    f"nested deeper than {max_depth} levels",
                    line=line,
                    column=None,
                    record=count + 1,
                )
            try:
                parser.send(data)
            except ijson.JSONError as exc:
                reason = _reason(exc)
                raise JSONArrayError(
                    f"malformed JSON ({reason})",
                    line=line,
                    column=_column(data, column, exc),
                    record=None if reason == "trailing garbage" else count + 1,
                ) from None
            if parsed:
                for value in parsed:
                    count += 1
                    yield value
                del parsed[:]
            if data.endswith(b"\n"):
                line, column = line + 1, 0
            elif data.endswith(b"\r"):
                column = 0
            else:
                column += len(data.decode("utf-8", errors="replace"))
    if not started:
        return
    try:
        parser.close()
    except ijson.JSONError:
        raise JSONArrayError(
            "the file ends before the JSON array does (is it cut short?)",
            line=line,
            column=None,
            record=count + 1,
        ) from None
    yield from parsed


#: Bytes fed to the parser at once, at most: what it parses from one piece is held at once.
PIECE = 64 * 1024


def _pieces(chunk: bytes) -> list[bytes]:
    """The chunk's lines (so that errors are located by line), long ones cut into PIECE bytes."""
    lines = chunk.splitlines(keepends=True)
    if all(len(line) <= PIECE for line in lines):
        return lines
    return [line[i : i + PIECE] for line in lines for i in range(0, len(line), PIECE)]


def _utf8_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, checked to be UTF-8 (one C-speed decode each), without a byte order mark."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, column = 1, 0
    first = True
    for chunk in chunks:
        if not chunk:
            continue
        if first:
            first = False
            if chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise UTF16("UTF-16", line=1, column=1, record=None)
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            start = chunk.rfind(b"\n", 0, exc.start) + 1
            before = chunk[start : exc.start].decode("utf-8", errors="replace")
            raise NotUTF8(
                line=line + chunk.count(b"\n", 0, exc.start),
                column=(0 if start else column) + len(before) + 1,
                byte=chunk[exc.start],
            ) from None
        newlines = chunk.count(b"\n")
        tail = chunk[chunk.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")
        line, column = line + newlines, (len(tail) if newlines else column + len(tail))
        yield chunk
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise NotUTF8(line=line, column=column, byte=0) from None


#: yajl's messages that need saying in the user's terms.
_REASONS = {
    "integer overflow": "an integer too large for 64 bits; write it as a string",
    "numeric (floating point) overflow": "a number too large",
}


def _reason(exc: Exception) -> str:
    """yajl's message without its "parse error:" prefix and context lines."""
    first = str(exc).split("\n", 1)[0].strip()
    reason = re.sub(r"^(parse|lexical) error: ", "", first).rstrip(".") or "syntax error"
    return _REASONS.get(reason, reason)


# yajl's verbose message shows the text around the error, padded so that the error is under
# the caret of "(right here) ------^" in the next line, at this index.
_CARET = 40


def _column(piece: bytes, start: int, exc: Exception) -> int | None:
    """The column of a syntax error in `piece` (which starts at column `start` + 1), when
    yajl's context pinpoints it: the error within 30 bytes of the piece's end, as on any
    ordinary line; else None."""
    lines = str(exc).split("\n")
    if len(lines) < 3 or not lines[2].endswith("^") or len(lines[2]) - 1 != _CARET:
        return None
    shown = len(lines[1].encode("utf-8"))  # yajl counts bytes
    if shown >= _CARET + 30:
        return None  # the piece goes on after the window: the offset is unknown
    offset = _CARET + len(piece) - shown  # bytes into the piece, past the bad token
    if not 0 < offset <= len(piece):
        return None
    return start + max(len(piece[:offset].decode("utf-8", errors="replace")), 1)


def _deep_piece(guard: NestingGuard, pieces: list[bytes]) -> int:
    """The index of the first piece that takes the nesting past the limit (the guard's state
    is replayed from before the chunk)."""
    replay = NestingGuard(limit=guard.limit)
    replay.__dict__.update(guard.before)
    for index, piece in enumerate(pieces):
        if replay.deepest(piece) > replay.limit:
            return index
    return 0


# A complete JSON string; and the rest of one that began in an earlier chunk.
_BODY = rb'[^"\\]*(?:\\.[^"\\]*)*'
_STRING = re.compile(rb'"' + _BODY + rb'"', re.DOTALL)
_STRING_END = re.compile(_BODY + rb'"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


@functools.cache
def _openers() -> Any:
    """+1 for each opening bracket's byte, -1 for each closing one's, 0 elsewhere."""
    import numpy as np

    table = np.zeros(256, dtype=np.int8)
    table[[ord("["), ord("{")]] = 1
    table[[ord("]"), ord("}")]] = -1
    return table


class NestingGuard:
    """The running nesting depth of a JSON text fed in chunks: brackets inside strings do not
    count, strings may span chunks. For a valid JSON text (and any valid prefix, all a parser
    reads before it stops) the count is exact."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the chunk ended in a string, after an odd run of backslashes
        self.before: dict[str, Any] = {}

    def deepest(self, chunk: bytes) -> int:
        """The deepest nesting reached within `chunk`; updates the running state."""
        self.before = {k: getattr(self, k) for k in ("depth", "in_string", "escaped")}
        start = 0
        if self.in_string:
            begin = 1 if self.escaped else 0
            end = _STRING_END.match(chunk, min(begin, len(chunk)))
            if end is None:
                self._still_in_string(chunk, begin)
                return self.depth
            self.in_string = self.escaped = False
            start = end.end()
        outside = _STRING.sub(b"", chunk[start:] if start else chunk)
        quote = outside.find(b'"')
        if quote != -1:  # a string that goes on into the next chunk
            outside = outside[:quote]
            self.in_string = True
            self._still_in_string(chunk, 0)
        steps = outside.translate(None, _NOT_BRACKETS)
        if not steps:
            return self.depth
        # Imported here: only imports need it, and a web process starts without NumPy.
        import numpy as np

        depths = self.depth + np.cumsum(_openers()[np.frombuffer(steps, dtype=np.uint8)])
        deepest = max(self.depth, int(depths.max()))
        self.depth = int(depths[-1])
        return deepest

    def _still_in_string(self, chunk: bytes, begin: int) -> None:
        tail = chunk[begin:]
        run = len(tail) - len(tail.rstrip(b"\\"))
        self.escaped = run % 2 == 1
