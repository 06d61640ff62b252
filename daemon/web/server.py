"""The status page's HTTP server: standard library ``ThreadingHTTPServer`` in a daemon thread.

Routes: ``GET /`` (the page), ``GET /api/status`` (:func:`daemon.status.report` with the live
data: what ``mapillaryd status --json`` prints, plus bytes in flight), ``GET /api/tracks``,
``GET /metrics`` (Prometheus), ``GET /healthz``, and ``POST /api/pause``, ``/api/resume``,
``/api/retry``.

Access: on a loopback address anyone on this machine may read it, but a request whose ``Host``
is not a loopback name is refused (a web page elsewhere cannot read it through DNS rebinding).
With an access token (required for any other address) every request must bring it: an
``Authorization: Bearer`` header, or ``?token=`` once, which sets a cookie derived from the token
(the token itself never appears in a page) and redirects to the bare URL. ``POST`` requests
must carry ``X-Requested-With: mapillaryd``, which a form on a foreign site cannot send: no
cross-site request can pause the uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from daemon import control
from daemon.clock import Clock
from daemon.config import Config, is_loopback
from daemon.errors import DaemonError
from daemon.progress import ProgressRegistry
from daemon.status import STATUS_URL_KEY, report
from daemon.store.queue import Queue
from daemon.web.metrics import CONTENT_TYPE as METRICS_TYPE
from daemon.web.metrics import render_metrics
from daemon.web.page import render_page
from daemon.web.svgmap import render_svg
from daemon.web.tracks import recent_tracks

log = structlog.get_logger(__name__)

COOKIE = "mapillaryd_session"
ACTION_HEADER = "X-Requested-With"
ACTION_VALUE = "mapillaryd"
IDLE_TIMEOUT_S = 30.0


class AccessTokenError(DaemonError):
    """The status page's token file cannot be used."""


def read_access_token(cfg: Config) -> str | None:
    """The status page's access token from ``[status] token_file`` (None when not set).

    Raise :class:`AccessTokenError` naming the file when it is unreadable or empty.
    """
    path = cfg.status.token_file
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AccessTokenError(f"status.token_file: cannot read {path}: {exc.strerror}") from exc
    if len(token) < 8:
        raise AccessTokenError(f"status.token_file: {path} holds no token of 8+ characters")
    return token


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _hostname(host_header: str) -> str:
    """The name in a ``Host`` header: ``[::1]:8686`` → ``::1``, ``localhost:80`` → ``localhost``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _json(status: int, payload: object) -> Reply:
    return Reply(status, json.dumps(payload, indent=1).encode(), "application/json")


class StatusApp:
    """The routes, over one queue connection shared (under a lock) by the request threads."""

    def __init__(
        self,
        cfg: Config,
        queue: Queue,
        clock: Clock,
        *,
        token: str | None,
        progress: ProgressRegistry,
        upstream_pause: Callable[[], float] = lambda: 0.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg, self.queue, self.clock = cfg, queue, clock
        self.token = token
        self.progress = progress
        self.upstream_pause = upstream_pause
        self.on_change = on_change
        self.lock = threading.Lock()
        self.session = (
            hashlib.sha256(f"mapillaryd-status-cookie\n{token}".encode()).hexdigest()
            if token
            else ""
        )

    # --- access ---------------------------------------------------------------------------

    def allowed(self, headers: Any, query: dict[str, list[str]]) -> Reply | None:
        """None if the request may go on; else the refusal to send."""
        if self.token is None:
            host = _hostname(headers.get("Host") or "")
            if host and not is_loopback(host) and host != self.cfg.status.listen:
                return Reply(403, b"refused: unexpected Host header\n")
            return None
        auth = headers.get("Authorization") or ""
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token):
            return None
        cookie = SimpleCookie(headers.get("Cookie") or "")
        if COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value, self.session):
            return None
        given = (query.get("token") or [""])[0]
        if given and hmac.compare_digest(given, self.token):
            return None
        return Reply(
            401,
            b"an access token is required: open this address with ?token=... once, "
            b"or send Authorization: Bearer ...\n",
            headers={"WWW-Authenticate": 'Bearer realm="mapillaryd"'},
        )

    # --- routes ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any) -> Reply:
        refusal = self.allowed(headers, query)
        if refusal is not None:
            return refusal
        if "token" in query and self.token is not None:
            # Trade the token in the URL for a cookie, and get the token out of the address bar.
            return Reply(
                303,
                b"",
                headers={
                    "Location": path,
                    "Set-Cookie": f"{COOKIE}={self.session}; HttpOnly; SameSite=Strict; Path=/",
                },
            )
        if method == "GET":
            routes: dict[str, Callable[[], Reply]] = {
                "/": self.page,
                "/api/status": self.api_status,
                "/api/tracks": self.api_tracks,
                "/metrics": self.metrics,
                "/healthz": lambda: Reply(200, b"ok\n"),
            }
            route = routes.get(path)
            if route is not None:
                return route()
        elif method == "POST":
            action = {
                "/api/pause": self.pause,
                "/api/resume": self.resume,
                "/api/retry": self.retry,
            }.get(path)
            if action is not None:
                if headers.get(ACTION_HEADER) != ACTION_VALUE:
                    return _json(403, {"message": f"refused: {ACTION_HEADER} header missing"})
                return action()
        return Reply(404, b"not found\n")

    def report(self) -> dict[str, Any]:
        """The status report with this process's live view (bytes in flight, server pause)."""
        live = {
            "transfers": self.progress.snapshot(),
            "upstream_pause_seconds": self.upstream_pause(),
        }
        with self.lock:
            return report(self.queue, cfg=self.cfg, now=self._now(), live=live)

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def page(self) -> Reply:
        rep = self.report()
        with self.lock:
            tracks = recent_tracks(self.queue)
        html = render_page(rep, render_svg(tracks))
        return Reply(
            200,
            html.encode(),
            "text/html; charset=utf-8",
            {"Cache-Control": "no-store", "Content-Security-Policy": _CSP},
        )

    def api_status(self) -> Reply:
        return _json(200, self.report())

    def api_tracks(self) -> Reply:
        with self.lock:
            tracks = recent_tracks(self.queue)
        return _json(
            200,
            [
                {
                    "sequence": t.sequence_id,
                    "state": t.state,
                    "images": t.images,
                    "points": t.points,
                }
                for t in tracks
            ],
        )

    def metrics(self) -> Reply:
        rep = self.report()
        with self.lock:
            reasons = control.reason_counts(self.queue)
        text = render_metrics(rep, reasons, sent_bytes=self.progress.sent_total, now=self._now())
        return Reply(200, text.encode(), METRICS_TYPE)

    def pause(self) -> Reply:
        with self.lock:
            changed = control.pause(self.queue, self.clock.now(), "status page")
        if changed:
            log.info("uploads_paused", by="status page")
        return _json(200, {"paused": True, "message": "Uploads paused." if changed else "Already."})

    def resume(self) -> Reply:
        with self.lock:
            changed = control.resume(self.queue)
        if changed:
            log.info("uploads_unpaused", by="status page")
            self.on_change()
        return _json(200, {"paused": False, "message": "Uploads resumed." if changed else "OK."})

    def retry(self) -> Reply:
        with self.lock:
            result = control.retry_now(self.queue, self._now())
        log.info("retry_now", by="status page", made_due=result.made_due, requeued=result.requeued)
        self.on_change()
        return _json(
            200,
            {
                "made_due": result.made_due,
                "requeued": result.requeued,
                "message": f"{result.made_due} waiting upload(s) due now, "
                f"{result.requeued} failed file(s) retried.",
            },
        )


# Everything inline, nothing from elsewhere: the page works offline and leaks no request.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 65536:
            self.rfile.read(length)  # bodies mean nothing here; read to keep the connection
        elif length:
            self.close_connection = True
        self._handle("POST")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        try:
            reply = self.server.app.handle(method, split.path, query, self.headers)
        except Exception:
            log.exception("status_page_error", path=split.path)
            reply = Reply(500, b"internal error; see the daemon's log\n")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # The request line may carry ?token=: log the path only.
        log.debug(
            "status_page_request", path=urlsplit(self.path).path, client=self.client_address[0]
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: StatusApp, ipv6: bool) -> None:
        self.app = app
        if ipv6:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("status_page_connection_failed", client=str(client_address))


class StatusServer:
    """The server bound at construction (``port=0`` picks one); :meth:`start` serves in a daemon
    thread, :meth:`stop` ends it. :attr:`url` is where a browser on this machine finds it."""

    def __init__(self, app: StatusApp) -> None:
        self.app = app
        host = app.cfg.status.listen
        self._server = _Server((host, app.cfg.status.port), app, ipv6=":" in host)
        port = self._server.server_address[1]
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(host, host)
        self.url = f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
        self._thread: threading.Thread | None = None

    def start(self) -> StatusServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="status-page", daemon=True
        )
        self._thread.start()
        with self.app.lock:
            self.app.queue.set_meta(STATUS_URL_KEY, self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(Exception), self.app.lock:
            self.app.queue.set_meta(STATUS_URL_KEY, None)
        self.app.queue.close()


def start(
    cfg: Config,
    open_queue: Callable[[], Queue],
    clock: Clock,
    progress: ProgressRegistry,
    *,
    upstream_pause: Callable[[], float] = lambda: 0.0,
    on_change: Callable[[], None] = lambda: None,
    redact: Callable[[str], None] = lambda _secret: None,
) -> StatusServer | None:
    """Start the status page as ``cfg.status`` says; None when it is off or cannot start (the
    reason is logged: the daemon runs on without it)."""
    if not cfg.status.enabled:
        return None
    try:
        token = read_access_token(cfg)
    except AccessTokenError as exc:
        log.error("status_page_unavailable", reason=str(exc))
        return None
    if token:
        redact(token)
    elif not is_loopback(cfg.status.listen):
        log.error("status_page_unavailable", reason="status.token_file is required off loopback")
        return None
    queue = open_queue()
    app = StatusApp(
        cfg,
        queue,
        clock,
        token=token,
        progress=progress,
        upstream_pause=upstream_pause,
        on_change=on_change,
    )
    try:
        server = StatusServer(app).start()
    except OSError as exc:
        queue.close()
        log.error(
            "status_page_unavailable",
            reason=f"cannot listen on {cfg.status.listen}:{cfg.status.port}: {exc.strerror}",
        )
        return None
    log.info("status_page", url=server.url, token_required=token is not None)
    return server
