"""Reading a request body as it arrives: ``Content-Length``, chunked, or none.

The body is consumed piece by piece so the upload route can append each piece to disk before the
next one arrives; when the client disappears half-way, what arrived is kept and :class:`BodyCut`
is raised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from email.message import Message
from typing import Protocol

PIECE = 64 * 1024
_MAX_LINE = 4096
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


class Readable(Protocol):
    """The part of a buffered socket file the reader uses."""

    def read1(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


class BodyCut(Exception):
    """The client stopped sending (EOF, reset, timeout) before the body ended."""


class BodyFramingError(Exception):
    """The body's framing is malformed (bad ``Content-Length`` or chunk header)."""


class Body:
    """The body of one request. Iterate once for its pieces; then ``ended`` is True.

    ``on_bytes`` is told the size of every piece read (the sandbox's byte counter).
    Raises :class:`BodyFramingError` at construction for a bad ``Content-Length``.
    """

    def __init__(self, rfile: Readable, headers: Message, on_bytes: Callable[[int], None]) -> None:
        self._rfile = rfile
        self._on_bytes = on_bytes
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._length = 0 if self._chunked else _content_length(headers)
        self.started = False
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        if self.started:
            raise RuntimeError("a request body can be read only once")
        self.started = True
        pieces = self._chunks() if self._chunked else self._sized(self._length)
        for piece in pieces:
            self._on_bytes(len(piece))
            yield piece
        self.ended = True

    def read_all(self, limit: int) -> bytes:
        """The whole body; :class:`BodyFramingError` if it is longer than ``limit`` bytes."""
        out = bytearray()
        for piece in self:
            out += piece
            if len(out) > limit:
                raise BodyFramingError(f"body larger than {limit} bytes")
        return bytes(out)

    def drain(self, limit: int) -> bool:
        """Read and drop what is left, up to ``limit`` bytes; True if the body was fully read."""
        if self.started:
            return self.ended
        try:
            read = 0
            for piece in self:
                read += len(piece)
                if read > limit:
                    return False
        except (BodyCut, BodyFramingError):
            return False
        return True

    def _read_some(self, most: int) -> bytes:
        """What has arrived, at most ``most`` bytes (never nothing: EOF raises BodyCut)."""
        try:
            data = self._rfile.read1(most)
        except OSError as exc:  # reset, timeout
            raise BodyCut(str(exc)) from exc
        if not data:
            raise BodyCut("connection closed inside the body")
        return data

    def _readline(self) -> bytes:
        try:
            line = self._rfile.readline(_MAX_LINE)
        except OSError as exc:
            raise BodyCut(str(exc)) from exc
        if not line:
            raise BodyCut("connection closed inside the chunked framing")
        if not line.endswith(b"\n"):
            raise BodyFramingError("chunk header line too long")
        return line

    def _sized(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            piece = self._read_some(min(PIECE, remaining))
            remaining -= len(piece)
            yield piece

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = _chunk_size(self._readline())
            if size == 0:
                break
            yield from self._sized(size)
            if self._readline().strip():
                raise BodyFramingError("chunk data not followed by CRLF")
        while self._readline().strip():  # trailers, up to the blank line
            pass


def _content_length(headers: Message) -> int:
    raw = headers.get("Content-Length")
    if raw is None:
        return 0
    if not raw.strip().isdigit():
        raise BodyFramingError(f"bad Content-Length {raw!r}")
    return int(raw)


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(text):
        raise BodyFramingError(f"bad chunk size {text[:20]!r}")
    return int(text, 16)
