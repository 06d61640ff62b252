"""The sandbox's routes: upload service, Graph API subset and ``/_sandbox`` inspection.

:class:`SandboxApp` maps one parsed request (plus its unread body) to one :class:`Reply`; it knows
nothing about sockets. The HTTP plumbing is in :mod:`daemon.sandbox.server`.

Fault injection seam: :attr:`SandboxApp.faults` is consulted first for every request. A hook may
return a reply to send instead (5xx, 429…), sleep before returning None (slow), or raise
:class:`Disconnect` to drop the connection without answering. A hook that is also a
:class:`RouteFaultHook` acts inside the routes too: it sees (and may cut or throttle) upload
bodies, may make a session lose bytes, and may lose the reply after the route did its work
(:mod:`daemon.sandbox.faults` is such a hook). ``POST /_sandbox/faults`` installs one at run time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol, runtime_checkable
from urllib.parse import unquote

from daemon.clock import Clock
from daemon.sandbox import replies
from daemon.sandbox.body import Body, BodyCut, BodyFramingError
from daemon.sandbox.finish import Finisher, FinishError, parse_request
from daemon.sandbox.handles import HandleSigner
from daemon.sandbox.replies import Reply, graph_error, json_reply, upload_error
from daemon.sandbox.store import OffsetMismatchError, SandboxStore, SessionBusyError

JSON_BODY_LIMIT = 1 << 20
MAX_SESSION_KEY = 1024
CLIENT_TOKEN_PREFIX = "MLY|"


class Disconnect(Exception):
    """Drop the connection without sending an answer."""


@dataclass(frozen=True)
class Request:
    """What a route (and a fault hook) sees of one request.

    ``route`` names the matched route with its method, e.g. ``"POST /upload/{session_key}"``
    (``"<METHOD> (unknown)"`` when nothing matched); ``params`` holds the decoded path parameters.
    """

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    route: str
    params: dict[str, str] = field(default_factory=dict)
    #: The client's ``host:port``: tells one connection from another.
    peer: str = ""


class FaultHook(Protocol):
    """Consulted at the start of every request; see the module docstring."""

    def before(self, request: Request) -> Reply | None:
        """A reply to send instead of the route's, or None to carry on."""
        ...


@runtime_checkable
class RouteFaultHook(FaultHook, Protocol):
    """A fault hook that also acts inside routes, on the request :meth:`before` last saw."""

    def body(self, request: Request, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """The upload body as the route shall read it (may raise ``BodyCut`` part-way)."""
        ...

    def held(self, request: Request, held: int, complete: bool) -> int:
        """How many of the ``held`` bytes of the request's session the server keeps."""
        ...

    def after(self, request: Request, reply: Reply) -> Reply | None:
        """The reply to send once the route has run, or None to send none (lost response)."""
        ...

    def snapshot(self) -> dict[str, object]:
        """Counts for ``GET /_sandbox/stats`` (its ``faults`` member)."""
        ...


class NoFaults:
    """The default hook: never interferes."""

    def before(self, request: Request) -> Reply | None:
        return None


class Stats:
    """Request counts per route and bytes received, since this process started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._bytes = 0
        self._wire = 0
        self._unread = 0

    def count(self, route: str) -> None:
        with self._lock:
            self._requests[route] = self._requests.get(route, 0) + 1

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    def add_wire(self, n: int) -> None:
        """Count ``n`` bytes read off a client socket (request lines, headers, framing, bodies)."""
        with self._lock:
            self._wire += n

    def add_unread(self, n: int) -> None:
        """Count ``n`` bytes that had arrived when a connection was dropped, never read."""
        with self._lock:
            self._unread += n

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "bytes_received": self._bytes,
                "wire_bytes_received": self._wire,
                "wire_bytes_unread": self._unread,
            }


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    template: str


def _route(regex: str, template: str) -> _Route:
    return _Route(re.compile(regex), template)


# First match wins; which methods a path accepts is decided by SandboxApp's handler table.
_ROUTES = (
    _route(r"/_sandbox/clusters", "/_sandbox/clusters"),
    _route(r"/_sandbox/stats", "/_sandbox/stats"),
    _route(r"/_sandbox/faults", "/_sandbox/faults"),
    _route(r"/_sandbox/sessions/(?P<session_key>[^/]+)", "/_sandbox/sessions/{session_key}"),
    _route(r"/upload/(?P<session_key>[^/]+)", "/upload/{session_key}"),
    _route(r"/finish_upload", "/finish_upload"),
    _route(r"/me", "/me"),
    _route(r"/logging", "/logging"),
    # The archive's Graph API and CDN (handlers added by daemon.sandbox.graph_archive).
    _route(r"/images", "/images"),
    _route(r"/image_ids", "/image_ids"),
    _route(r"/cdn/(?P<cdn_path>.+)", "/cdn/{cdn_path}"),
    _route(r"/(?P<object_id>[^/_][^/]*)", "/{object_id}"),
)


def match(method: str, path: str) -> tuple[str, dict[str, str]]:
    """(route name, decoded path parameters) for a request; see :attr:`Request.route`."""
    for route in _ROUTES:
        m = route.pattern.fullmatch(path)
        if m:
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            return f"{method} {route.template}", params
    return f"{method} (unknown)", {}


def user_id_for(username: str) -> str:
    """A stable numeric user id derived from the username."""
    return str(int(hashlib.sha256(username.encode()).hexdigest()[:13], 16))


class SandboxApp:
    """Route logic over a :class:`SandboxStore`. Thread-safe."""

    def __init__(self, store: SandboxStore, token: str, username: str, clock: Clock) -> None:
        self.faults: FaultHook = NoFaults()
        self.stats = Stats()
        self._store = store
        self._token = token
        self._username = username
        self._signer = HandleSigner(store.secret)
        self._finisher = Finisher(store, self._signer, clock)
        #: The sandbox's time: handles, finish times, the ``Date`` header, fault windows.
        self.clock = clock
        self._routes: dict[str, Callable[[Request, Body], Reply]] = {
            "GET /_sandbox/clusters": self._clusters,
            "GET /_sandbox/stats": self._stats,
            "GET /_sandbox/faults": self._get_faults,
            "POST /_sandbox/faults": self._set_faults,
            "GET /_sandbox/sessions/{session_key}": self._session_bytes,
            "GET /upload/{session_key}": self._get_offset,
            "POST /upload/{session_key}": self._post_bytes,
            "POST /finish_upload": self._finish_upload,
            "GET /me": self._me,
            "POST /logging": self._logging,
            "GET /{object_id}": self._get_object,
        }
        self._public: set[str] = set()

    def add_routes(
        self, routes: dict[str, Callable[[Request, Body], Reply]], *, public: tuple[str, ...] = ()
    ) -> None:
        """Add or replace route handlers (keys as :attr:`Request.route`); the ``public`` ones
        are answered without a token (a CDN does not check the Graph token)."""
        self._routes.update(routes)
        self._public.update(public)

    def handle(self, request: Request, body: Body) -> Reply:
        """The reply to ``request``; raises :class:`Disconnect` when no reply should be sent."""
        self.stats.count(request.route)
        fault = self.faults.before(request)
        if fault is not None:
            return fault
        handler = self._routes.get(request.route)
        if handler is None:
            return _not_routed(request)
        if not self._authorized(request):
            return replies.auth_failed()
        try:
            reply = handler(request, body)
        except _UploadReject as exc:
            reply = exc.reply
        except FinishError as exc:
            reply = graph_error(400, str(exc))
        except BodyFramingError as exc:
            reply = graph_error(400, f"bad request body: {exc}")
        except BodyCut as exc:
            raise Disconnect(str(exc)) from exc
        hook = self.faults
        if isinstance(hook, RouteFaultHook):
            after = hook.after(request, reply)
            if after is None:
                raise Disconnect("fault injection: response lost")
            reply = after
        return reply

    def _authorized(self, request: Request) -> bool:
        if request.route.startswith(("GET /_sandbox/", "POST /_sandbox/faults")):
            return True
        if request.route in self._public:
            return True
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("oauth", "bearer") or not token:
            return False
        if request.route == "POST /logging" and token.startswith(CLIENT_TOKEN_PREFIX):
            return True
        return hmac.compare_digest(token.encode(), self._token.encode())

    # --- upload service -------------------------------------------------------------------------

    def _get_offset(self, request: Request, body: Body) -> Reply:
        key = _session_key(request)
        self._session_faults(request, key)
        return json_reply(200, {"offset": self._store.offset(key)})

    def _session_faults(self, request: Request, key: str) -> None:
        """Let a route fault hook make the session lose bytes (an expired or reset session)."""
        hook = self.faults
        if not isinstance(hook, RouteFaultHook):
            return
        session = self._store.session(key)
        held = self._store.offset(key)
        keep = hook.held(request, held, session is not None and session.complete)
        if keep < held:
            self._store.truncate(key, keep)

    def _post_bytes(self, request: Request, body: Body) -> Reply:
        key = _session_key(request)
        offset = _int_header(request, "Offset")
        if offset is None:
            raise _UploadReject(400, "InvalidRequestError", "Offset header is required")
        entity_length = _int_header(request, "X-Entity-Length")
        name = request.headers.get("X-Entity-Name")
        if name is not None and name != key:
            raise _UploadReject(400, "InvalidRequestError", "X-Entity-Name differs from the URL")
        self._session_faults(request, key)
        hook = self.faults
        pieces: Iterable[bytes] = body
        if isinstance(hook, RouteFaultHook):
            pieces = hook.body(request, iter(body))
        try:
            with self._store.append(key, offset, entity_length) as appender:
                for piece in pieces:
                    appender.write(piece)
                appender.ended_cleanly = True
        except OffsetMismatchError as exc:
            message = f"Offset {offset} does not match the {exc.held} bytes held"
            return upload_error(412, "OffsetInvalidError", message, retriable=True)
        except SessionBusyError:
            message = "another request is uploading to this session"
            return upload_error(409, "SessionBusyError", message, retriable=True)
        session = self._store.session(key)
        assert session is not None
        return json_reply(200, {"h": self._signer.issue(key, session.created_at)})

    # --- Graph API -----------------------------------------------------------------------------

    def _finish_upload(self, request: Request, body: Body) -> Reply:
        finish = parse_request(body.read_all(JSON_BODY_LIMIT))
        cluster = self._finisher.finish(finish)
        return json_reply(200, {"cluster_id": cluster.cluster_id})

    def _me(self, request: Request, body: Body) -> Reply:
        wanted = {f for v in request.query.get("fields", []) for f in v.split(",")}
        me = {"id": user_id_for(self._username)}
        if "username" in wanted:
            me["username"] = self._username
        return json_reply(200, me)

    def _logging(self, request: Request, body: Body) -> Reply:
        body.read_all(JSON_BODY_LIMIT)
        return json_reply(200, {})

    def _get_object(self, request: Request, body: Body) -> Reply:
        object_id = request.params["object_id"]
        message = (
            f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be"
            " loaded due to missing permissions, or does not support this operation"
        )
        return graph_error(404, message, subcode=33)

    # --- inspection ----------------------------------------------------------------------------

    def _clusters(self, request: Request, body: Body) -> Reply:
        return json_reply(200, [c.as_json() for c in self._store.clusters()])

    def _stats(self, request: Request, body: Body) -> Reply:
        snapshot = self.stats.snapshot()
        if isinstance(self.faults, RouteFaultHook):
            snapshot["faults"] = self.faults.snapshot()
        return json_reply(200, snapshot)

    def _get_faults(self, request: Request, body: Body) -> Reply:
        if isinstance(self.faults, RouteFaultHook):
            return json_reply(200, self.faults.snapshot())
        return json_reply(200, {})

    def _set_faults(self, request: Request, body: Body) -> Reply:
        """Replace the fault spec (JSON or TOML body, see :mod:`daemon.sandbox.faults`)."""
        from daemon.sandbox.faults import FaultInjector, FaultSpecError, parse_spec

        try:
            spec = parse_spec(body.read_all(JSON_BODY_LIMIT).decode("utf-8"), "request body")
        except UnicodeDecodeError:
            return graph_error(400, "fault spec is not UTF-8")
        except FaultSpecError as exc:
            return json_reply(400, {"error": {"message": str(exc), "problems": exc.problems}})
        current = self.faults
        if isinstance(current, FaultInjector):
            current.configure(spec)
        else:
            self.faults = FaultInjector(spec, self.clock)
        return json_reply(200, spec.as_json())

    def _session_bytes(self, request: Request, body: Body) -> Reply:
        key = _session_key(request)
        if self._store.session(key) is None:
            return graph_error(404, f"no session {key[:80]!r}")
        return Reply(200, self._store.read(key), "application/octet-stream")


class _UploadReject(Exception):
    """A malformed upload request; carries its upload service error envelope."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.reply = upload_error(status, error_type, message, retriable=False)


def _not_routed(request: Request) -> Reply:
    if request.route.endswith("(unknown)"):
        return graph_error(404, f"Unknown path components: {request.path[:200]}")
    return graph_error(405, f"{request.method} is not allowed on {request.path[:200]}")


def _session_key(request: Request) -> str:
    key = request.params["session_key"]
    if len(key) > MAX_SESSION_KEY:
        raise _UploadReject(400, "InvalidRequestError", "session key too long")
    return key


def _int_header(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise _UploadReject(400, "InvalidRequestError", f"{name} header is not an integer")
    return int(raw)
