"""Client of the resumable upload service (``rupload``), as mapillary_tools 0.14.7 speaks it.

``GET {endpoint}/{session_key}`` → ``{"offset": n}``: how many bytes the service holds.
``POST {endpoint}/{session_key}`` with ``Offset: n`` and ``X-Entity-Name: <session_key>``, the
body being the source from ``n`` to its end in one request → ``{"h": handle}``: a file as one
chunked stream (as mapillary_tools 0.14.7 sends it), bytes in memory (:class:`Buffers`) with
their ``Content-Length`` (as older mapillary_tools sent its pieces; the service takes both).
Failures are raised as :mod:`daemon.errors` (see :mod:`daemon.mapillary.http`); retrying is the
caller's business.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol
from urllib.parse import quote

import httpx

from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.mapillary.http import HttpClient, JsonHttp

MIN_UPLOAD_SPEED = 50 * 1024  # bytes/s; the read timeout grows with what is left to send
_DIGEST_HEX = re.compile(r"[0-9a-f]{32}")
_SUFFIX = re.compile(r"\.[a-z0-9]+")


def session_key(digest_hex: str, suffix: str) -> str:
    """The session key for content with this 128-bit digest: ``mly_tools_<digest><suffix>``,
    mapillary_tools' form (it uses the md5 of the bytes; see daemon.upload.image_session_key
    for the images' digest).

    ``suffix`` includes its dot: ``.jpg`` for images, ``.mp4`` for videos, ``.zip``, ``.json``.
    Identical content maps to the same key, which is what makes resuming across runs work.
    Raises ValueError for anything but 32 hex digits and a ``.alnum`` suffix.
    """
    digest_hex, suffix = digest_hex.lower(), suffix.lower()
    if not _DIGEST_HEX.fullmatch(digest_hex):
        raise ValueError(f"not a 128-bit hex digest: {digest_hex!r}")
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"not a file suffix: {suffix!r}")
    return f"mly_tools_{digest_hex}{suffix}"


class Pace(Protocol):
    """A bandwidth limit (:class:`daemon.throttle.Bandwidth`): how big a piece to read, and a
    wait until a piece of that many bytes may go."""

    def piece(self, default: int) -> int: ...

    def take(self, size: int) -> None: ...


class Buffers:
    """Bytes in memory as consecutive buffers — a photo with one segment replaced is its head,
    the new segment and its tail — sent as they are, never joined into one copy."""

    def __init__(self, *parts: bytes | memoryview) -> None:
        self._parts = tuple(memoryview(p).cast("B") for p in parts if len(p))
        self.size = sum(len(p) for p in self._parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self._parts)

    def views(self, offset: int) -> list[memoryview]:
        """The bytes from ``offset`` on, as views of the parts (no copies)."""
        out = []
        for part in self._parts:
            if offset < len(part):
                out.append(part[offset:] if offset else part)
            offset = max(0, offset - len(part))
        return out


class UploadService(HttpClient):
    """Fetch offsets and stream bytes to one upload endpoint with one user token."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        gate: Callable[[], None] | None = None,
        chunk_size: int = 1 << 20,
        pace: Pace | None = None,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self._endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._pace = pace
        self._http = JsonHttp(token, clock=clock, timeout=timeout, transport=transport, gate=gate)

    def _url(self, key: str) -> str:
        return f"{self._endpoint}/{quote(key, safe='')}"

    def fetch_offset(self, session_key: str) -> int:
        """Bytes the service holds for ``session_key`` (0 for a session it has never seen)."""
        reply = self._http.send("GET", self._url(session_key), {})
        offset = reply.payload.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise self._http.protocol_error(reply, "no valid offset")
        return offset

    def upload(
        self,
        session_key: str,
        source: BinaryIO | Buffers | bytes,
        offset: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """Send ``source[offset:]`` as one POST and return the file handle.

        ``offset`` must be what :meth:`fetch_offset` said (else the service answers 412,
        raised as a retriable ``UploadError``). ``source`` is a seekable binary file (left
        open), read from ``offset`` in pieces of ``chunk_size`` and sent chunked, or bytes in
        memory, sent with their length as they lie (in pieces when a ``pace`` limits the rate);
        ``on_progress`` gets the absolute offset reached after each piece has been handed to
        the connection. Sending nothing (``offset`` at the end) returns the handle
        of a session that already holds everything. The read timeout is
        ``max(timeout, remaining bytes / 50 KiB/s)``.
        """
        if isinstance(source, bytes):
            source = Buffers(source)
        size = _size(source)
        if not 0 <= offset <= size:
            raise ValueError(f"offset {offset} outside the source's {size} bytes")
        read_timeout = max(self._timeout, (size - offset) / MIN_UPLOAD_SPEED)
        headers = {"Offset": str(offset), "X-Entity-Name": session_key}
        pieces = self._pieces(source, offset, on_progress)
        if isinstance(source, Buffers):
            reply = self._http.send(
                "POST",
                self._url(session_key),
                headers,
                read_timeout=read_timeout,
                body=pieces,
                length=size - offset,
            )
        else:
            reply = self._http.call(
                "POST",
                self._url(session_key),
                headers=headers,
                content=pieces,
                timeout=httpx.Timeout(self._timeout, read=read_timeout),
            )
        handle = reply.payload.get("h")
        if not isinstance(handle, str) or not handle:
            raise self._http.protocol_error(reply, "no file handle")
        return handle

    def _pieces(
        self,
        source: BinaryIO | Buffers,
        offset: int,
        on_progress: Callable[[int], None] | None,
    ) -> Iterator[bytes | memoryview]:
        pace = self._pace
        if isinstance(source, Buffers) and pace is None:
            yield from source.views(offset)
            if on_progress is not None and offset < source.size:
                on_progress(source.size)
            return
        stream: BinaryIO | _Reader
        if isinstance(source, Buffers):
            stream = _Reader(source.views(offset))  # views, not copies (CPU per GB)
        else:
            stream = source
            stream.seek(offset)
        position = offset
        while piece := stream.read(pace.piece(self._chunk_size) if pace else self._chunk_size):
            if pace is not None:
                pace.take(len(piece))
            yield piece
            position += len(piece)
            if on_progress is not None:
                on_progress(position)


class _Reader:
    """Reads consecutive views in pieces of at most the size asked (shorter at a view's end)."""

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        self._index = 0
        self._position = 0

    def read(self, size: int) -> memoryview:
        while self._index < len(self._views):
            view = self._views[self._index]
            if self._position < len(view):
                piece = view[self._position : self._position + size]
                self._position += len(piece)
                return piece
            self._index += 1
            self._position = 0
        return memoryview(b"")


def _size(source: BinaryIO | Buffers) -> int:
    if isinstance(source, Buffers):
        return source.size
    return source.seek(0, io.SEEK_END)
