"""One JSON-over-HTTP exchange with Mapillary, and the translation of every failure.

This is the boundary where httpx's exceptions and the services' error bodies become
:mod:`daemon.errors`:

* no usable response (connect/read/write failure, timeout, body cut) → ``TransportError``;
* 401/403, a 4xx whose ``debug_info.type`` is ``NotAuthorizedError``, or Graph error code 190
  → ``AuthError``;
* any other non-2xx → ``UploadError`` with ``status``, ``retry_after`` (``Retry-After`` in seconds
  or as an HTTP date, else the JSON ``backoff`` in ms), ``retriable`` (``debug_info.retriable``)
  and ``error_type`` (``debug_info.type`` or ``error.type``);
* a 2xx whose body is not a JSON object → ``ProtocolError``.

Messages name the method, URL path and status, with a short excerpt of the server's message;
the token is never part of them. Exceptions raised while producing a request body (e.g. an
``OSError`` reading the source file) are not translated: they are not the network's fault.
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import re
import ssl
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import SplitResult, urlsplit

import httpx

from daemon import __version__, errors
from daemon.clock import Clock
from daemon.mapillary.direct import ConnectFailed, DirectConnection

USER_AGENT = f"mapillaryd/{__version__}"
EXCERPT_CHARS = 200
INVALID_TOKEN_CODE = 190
_AUTH_STATUSES = (401, 403)
_DELAY_SECONDS = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True)
class JsonReply:
    """A 2xx answer: ``where`` is ``"<METHOD> <path> → <status>"``, for messages."""

    where: str
    status: int
    payload: dict[str, Any]


class JsonHttp:
    """An httpx client that sends ``Authorization: OAuth <token>`` and returns JSON objects."""

    def __init__(
        self,
        token: str,
        *,
        clock: Clock,
        timeout: float,
        transport: httpx.BaseTransport | None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self._token = token
        self._clock = clock
        self._gate = gate
        self._timeout = timeout
        self._direct = transport is None  # a test's transport sees every request
        self._direct_conn: DirectConnection | None = None
        self._transport = transport
        self._client: httpx.Client | None = None  # made on first use: the TLS CAs cost ~50 ms

    def _httpx(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                headers={"Authorization": f"OAuth {self._token}", "User-Agent": USER_AGENT},
                verify=_tls_context(),
                timeout=httpx.Timeout(self._timeout),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._direct_conn is not None:
            self._direct_conn.close()
            self._direct_conn = None

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        read_timeout: float | None = None,
        body: Iterable[bytes | memoryview] = (),
        length: int | None = None,
    ) -> JsonReply:
        """:meth:`call` for the uploader's hot path: ``method url`` with ``headers``
        and, when ``length`` is given, a body of that many bytes in the pieces ``body``; its 2xx
        JSON object. Same contract as :meth:`call` (gate, errors); ``read_timeout`` (default:
        the client's timeout) bounds the wait for the reply, and on the direct path also each
        piece's send.

        Goes through :mod:`daemon.mapillary.direct` (a fraction of httpx's CPU per request)
        when the connection is direct: no test transport was given and no proxy applies to the
        URL (httpx honours the ``*_PROXY`` variables; the direct path does not speak to
        proxies). Otherwise through httpx.
        """
        read_timeout = self._timeout if read_timeout is None else read_timeout
        parts = urlsplit(url)
        direct = self._direct_for(parts)
        if direct is None:
            if length is not None:
                headers = {**headers, "Content-Length": str(length)}
            return self.call(
                method,
                url,
                headers=headers,
                content=body if length is not None else None,
                timeout=httpx.Timeout(self._timeout, read=read_timeout),
            )
        if self._gate is not None:
            self._gate()
        where = f"{method} {parts.path}"
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            raw = direct.request(
                method, target, headers, timeout=read_timeout, body=body, length=length
            )
        except ConnectFailed as exc:
            detail = f"no usable response (cannot connect: {exc.__cause__ or exc})"
            raise errors.TransportError(
                self._redact(f"{where}: {detail}"), unreachable=True
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise errors.TransportError(self._redact(f"{where}: {_describe(exc)}")) from exc
        response = httpx.Response(raw.status, headers=raw.headers, content=raw.body)
        return self._reply(f"{where} → {raw.status}", response)

    def _direct_for(self, parts: SplitResult) -> DirectConnection | None:
        """The direct connection to the URL's origin; None when a test transport was given or
        a proxy applies to it (httpx serves those)."""
        host = parts.hostname or ""
        if not self._direct or _proxied(parts.scheme, host):
            return None
        origin = (parts.scheme, host, parts.port)
        if self._direct_conn is not None and self._direct_conn.origin != origin:
            self._direct_conn.close()
            self._direct_conn = None
        if self._direct_conn is None:
            self._direct_conn = DirectConnection(
                parts.geturl(),
                {"Authorization": f"OAuth {self._token}", "User-Agent": USER_AGENT},
                tls=_tls_context,
                connect_timeout=self._timeout,
            )
        return self._direct_conn

    def call(self, method: str, url: str, **kwargs: Any) -> JsonReply:
        """Send one request (``kwargs`` as for ``httpx.Client.request``); its 2xx JSON object.

        Raises the :mod:`daemon.errors` described in the module docstring, and whatever the
        ``gate`` given at construction raises: it is called before every request (the uploader's
        "is the whole upstream paused?" check).
        """
        if self._gate is not None:
            self._gate()
        where = f"{method} {httpx.URL(url).path}"
        try:
            response = self._httpx().request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise errors.TransportError(
                self._redact(f"{where}: {_describe(exc)}"),
                unreachable=isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout),
            ) from exc
        except httpx.RequestError as exc:  # e.g. undecodable content encoding
            raise errors.ProtocolError(self._redact(f"{where}: {_describe(exc)}")) from exc
        return self._reply(f"{where} → {response.status_code}", response)

    def _reply(self, where: str, response: httpx.Response) -> JsonReply:
        """The 2xx JSON object of ``response``, or the error it stands for."""
        if not response.is_success:
            raise self._status_error(where, response)
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            message = f"{where}: body is not JSON: {self._excerpt(response.text)}"
            raise errors.ProtocolError(message, status=response.status_code) from exc
        if not isinstance(payload, dict):
            message = f"{where}: expected a JSON object: {self._excerpt(response.text)}"
            raise errors.ProtocolError(message, status=response.status_code)
        return JsonReply(where, response.status_code, payload)

    def protocol_error(self, reply: JsonReply, message: str) -> errors.ProtocolError:
        """A :class:`~daemon.errors.ProtocolError` for a 2xx whose content broke the protocol."""
        text = f"{reply.where}: {message}: {self._excerpt(json.dumps(reply.payload))}"
        return errors.ProtocolError(text, status=reply.status)

    def _status_error(self, where: str, response: httpx.Response) -> errors.UploadError:
        payload = _json_or_empty(response)
        debug_info = _dict(payload.get("debug_info"))
        graph_error = _dict(payload.get("error"))
        error_type = debug_info.get("type") or graph_error.get("type")
        server_message = debug_info.get("message") or graph_error.get("message") or response.text
        retriable = debug_info.get("retriable")
        status = response.status_code
        cls = (
            errors.AuthError
            if _is_auth_failure(status, debug_info, graph_error)
            else errors.UploadError
        )
        return cls(
            f"{where}: {self._excerpt(str(server_message))}",
            status=status,
            retry_after=retry_after(response, payload, self._clock),
            retriable=retriable if isinstance(retriable, bool) else None,
            error_type=str(error_type) if error_type else None,
        )

    def _excerpt(self, text: str) -> str:
        flat = " ".join(text.split())
        if len(flat) > EXCERPT_CHARS:
            flat = flat[: EXCERPT_CHARS - 1] + "…"
        return self._redact(flat) or "(empty body)"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text


def _proxied(scheme: str, host: str) -> bool:
    """True if the environment's ``*_PROXY`` variables send ``scheme://host`` to a proxy."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(host)  # NO_PROXY, as the variables are set


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (certifi's CAs, as httpx's default) for every client of this process:
    loading the CAs takes tens of ms of CPU, once per client otherwise."""
    return httpx.create_ssl_context()


class HttpClient:
    """Base of the Mapillary clients: one :class:`JsonHttp` (``_http``), closed by
    :meth:`close` or by leaving a ``with`` block."""

    _http: JsonHttp

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def retry_after(response: httpx.Response, payload: dict[str, Any], clock: Clock) -> float | None:
    """Seconds the server asked to wait: ``Retry-After`` (seconds, or an HTTP date taken
    relative to the response's own ``Date`` — so a wrong local clock does not matter — or to
    ``clock.now()`` without one; never negative), else JSON ``backoff`` in milliseconds, else
    None."""
    headers = response.headers
    header = _header_delay(headers.get("Retry-After", "").strip(), headers.get("Date"), clock)
    return header if header is not None else _backoff_delay(payload.get("backoff"))


def _header_delay(value: str, date: str | None, clock: Clock) -> float | None:
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    now = _http_date(date) if date else None
    return max(0.0, (when - (now or clock.now())).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when  # RFC 9110: GMT


def _backoff_delay(backoff: Any) -> float | None:
    if isinstance(backoff, bool) or not isinstance(backoff, int | float):
        return None
    if not math.isfinite(backoff) or backoff < 0:
        return None
    return backoff / 1000.0


def _is_auth_failure(status: int, debug_info: dict[str, Any], graph: dict[str, Any]) -> bool:
    if status in _AUTH_STATUSES or graph.get("code") == INVALID_TOKEN_CODE:
        return True
    return 400 <= status < 500 and debug_info.get("type") == "NotAuthorizedError"


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        return _dict(response.json())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _describe(exc: Exception) -> str:
    detail = str(exc) or "no detail"
    return f"no usable response ({type(exc).__name__}: {detail})"
