"""Requests over one kept-alive :mod:`http.client` connection: the uploader's hot path
(offset requests, upload bodies, ``finish_upload``).

An offset request and a 2 MB photo's POST through httpx cost ~4 ms of CPU together (its
request and response models, h11's event machinery, header validation, the pool); through the
standard library's connection about a third of that. Only for direct connections (no proxy, no
redirects, nothing but a status, headers and a short JSON body to read back):
:class:`daemon.mapillary.http.JsonHttp` decides when it applies and translates its failures —
:class:`ConnectFailed` (nothing was sent), ``OSError`` and ``http.client.HTTPException``.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The most of a reply read back: the upload service answers with a few hundred bytes of JSON.
MAX_REPLY_BYTES = 1 << 20
#: Seconds a connection may sit idle and still be used (httpx's default): past that, a
#: server's idle timeout may be closing it as the next request goes out.
KEEPALIVE_EXPIRY = 5.0


class ConnectFailed(Exception):
    """The connection could not be opened (refused, unresolvable, timed out): nothing was sent.
    ``__cause__`` is the ``OSError``."""


@dataclass(frozen=True)
class RawReply:
    """A status, the response headers in order, and the body (at most ``MAX_REPLY_BYTES``)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class DirectConnection:
    """Requests to one origin (``scheme://host:port`` of ``base_url``), one at a time, over a
    connection kept between requests and opened again when it was closed, broken or idle
    longer than :data:`KEEPALIVE_EXPIRY`. Not thread-safe: one per worker."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        tls: Callable[[], ssl.SSLContext],
        connect_timeout: float,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.origin = (parts.scheme, parts.hostname, parts.port)
        self._headers = dict(headers)
        self._idle_since = 0.0
        self._conn: http.client.HTTPConnection
        if parts.scheme == "https":
            self._conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=connect_timeout, context=tls()
            )
        else:
            self._conn = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=connect_timeout
            )

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        self._conn.close()

    def request(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        body: Iterable[bytes | memoryview] = (),
        length: int | None = None,
    ) -> RawReply:
        """Send ``method target`` — with ``Content-Length: length`` and the body ``pieces``
        (each handed to the socket as it comes, so a pacing iterator paces the send) when
        ``length`` is given — then read the reply. ``timeout`` bounds each socket operation's
        total time, a whole piece's send included, so it must allow for the slowest uplink.

        Raises :class:`ConnectFailed` when no connection could be opened, ``OSError`` or
        ``http.client.HTTPException`` when the exchange broke (the connection is closed then);
        a body whose pieces do not add up to ``length`` raises ValueError before the reply is
        read.
        """
        conn = self._open()
        try:
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in (*self._headers.items(), *headers.items()):
                conn.putheader(name, value)
            if length is not None:
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
            sent = 0
            try:
                for piece in body:
                    conn.send(piece)
                    sent += len(piece)
            except OSError:
                # A server may answer before reading the whole body (a rejected token, a
                # wrong offset) and close: its answer, when it arrived, is what happened.
                try:
                    early = _read_reply(conn.getresponse())
                except (OSError, http.client.HTTPException):
                    early = None
                if early is None:
                    raise
                conn.close()
                return early
            if sent != (length or 0):
                raise ValueError(f"body of {sent} bytes, {length} announced")
            reply = _read_reply(conn.getresponse())
            self._idle_since = time.monotonic()
            return reply
        except BaseException:
            conn.close()
            raise

    def _open(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn.sock is not None and (
            time.monotonic() - self._idle_since > KEEPALIVE_EXPIRY or _readable(conn.sock)
        ):
            conn.close()  # idle too long, or closed by the server (or it sent unasked bytes)
        if conn.sock is None:
            try:
                conn.connect()
            except OSError as exc:
                conn.close()
                raise ConnectFailed(str(exc)) from exc
        return conn


def _read_reply(response: http.client.HTTPResponse) -> RawReply:
    if response.length is not None and response.length > MAX_REPLY_BYTES:
        raise http.client.HTTPException(f"a reply of {response.length} bytes")
    if response.length is not None or response.chunked:
        body = response.read()  # raises IncompleteRead when cut short
    else:  # delimited by the connection's end
        body = response.read(MAX_REPLY_BYTES)
        if not response.isclosed():
            raise http.client.HTTPException("a reply longer than any the service sends")
    return RawReply(response.status, response.getheaders(), body)


def _readable(sock: socket.socket) -> bool:
    """True if an idle kept-alive socket has something to read: the peer closed it (EOF) or
    sent bytes nobody asked for. Either way it cannot carry the next request."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)
