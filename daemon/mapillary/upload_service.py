"""Client of the resumable upload service (``rupload``), as mapillary_tools 0.14.7 speaks it.

``GET {endpoint}/{session_key}`` → ``{"offset": n}``: how many bytes the service holds.
``POST {endpoint}/{session_key}`` with ``Offset: n`` and ``X-Entity-Name: <session_key>``, the
body being the source from ``n`` to its end in one request → ``{"h": handle}``: a file as one
chunked stream (as mapillary_tools 0.14.7 sends it), bytes in memory with their
``Content-Length`` (as older mapillary_tools sent its pieces; the service takes both).
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
        source: BinaryIO | bytes,
        offset: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """Send ``source[offset:]`` as one POST and return the file handle.

        ``offset`` must be what :meth:`fetch_offset` said (else the service answers 412,
        raised as a retriable ``UploadError``). ``source`` is a seekable binary file (left
        open), read from ``offset`` in pieces of ``chunk_size`` and sent chunked, or bytes, sent
        with their length in one piece (in pieces when a ``pace`` limits the rate);
        ``on_progress`` gets the absolute offset reached after each piece has been handed to
        the connection. Sending nothing (``offset`` at the end) returns the handle
        of a session that already holds everything. The read timeout is
        ``max(timeout, remaining bytes / 50 KiB/s)``.
        """
        size = _size(source)
        if not 0 <= offset <= size:
            raise ValueError(f"offset {offset} outside the source's {size} bytes")
        read_timeout = max(self._timeout, (size - offset) / MIN_UPLOAD_SPEED)
        headers = {"Offset": str(offset), "X-Entity-Name": session_key}
        pieces = self._pieces(source, offset, on_progress)
        if isinstance(source, bytes):
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
        source: BinaryIO | bytes,
        offset: int,
        on_progress: Callable[[int], None] | None,
    ) -> Iterator[bytes | memoryview]:
        pace = self._pace
        if isinstance(source, bytes) and pace is None:
            if offset < len(source):
                yield source if offset == 0 else memoryview(source)[offset:]
                if on_progress is not None:
                    on_progress(len(source))
            return
        stream: BinaryIO | _View
        if isinstance(source, bytes):
            stream = _View(source, offset)  # views of bytes in memory, not copies (CPU per GB)
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


class _View:
    """Reads ``data`` from ``offset`` on as memoryviews: no copy of what is already in memory."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._view = memoryview(data)
        self._position = offset

    def read(self, size: int) -> memoryview:
        piece = self._view[self._position : self._position + size]
        self._position += len(piece)
        return piece


def _size(source: BinaryIO | bytes) -> int:
    if isinstance(source, bytes):
        return len(source)
    return source.seek(0, io.SEEK_END)
