"""The sandbox's HTTP server: standard library ``ThreadingHTTPServer``, one thread per connection.

:class:`Sandbox` owns the listening socket, the store and the serving thread. Every request is
parsed here, answered by :class:`daemon.sandbox.app.SandboxApp`, and every failure on the way
(malformed request line, bad framing, a bug in a route) becomes a JSON error, never a crash.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.sandbox.app import Disconnect, FaultHook, Request, SandboxApp, match
from daemon.sandbox.body import Body, BodyFramingError
from daemon.sandbox.replies import Reply, graph_error
from daemon.sandbox.store import SandboxStore

LOG = logging.getLogger("daemon.sandbox")
DRAIN_LIMIT = 64 << 20  # unread body bytes swallowed after an early answer, to keep the connection
IDLE_TIMEOUT_S = 120.0
STOP_JOIN_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05  # how quickly serve_forever notices stop()


class _Handler(BaseHTTPRequestHandler):
    """Parses one request at a time on a keep-alive connection."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK: ~44 ms per request on loopback instead of ~2 ms.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.rfile = _CountingReader(self.rfile, self.server.app.stats.add_wire)  # type: ignore[assignment]

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, from the sandbox's clock (tests may set it anywhere)."""
        if timestamp is None:
            timestamp = self.server.app.clock.now().timestamp()
        return super().date_time_string(timestamp)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _handle(self) -> None:
        split = urlsplit(self.path)
        route, params = match(self.command, split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        request = Request(self.command, split.path, query, self.headers, route, params, peer)
        try:
            body = Body(self.rfile, self.headers, self.server.app.stats.add_bytes)
        except BodyFramingError as exc:
            self.close_connection = True
            self._send(graph_error(400, f"bad request body: {exc}"))
            return
        try:
            reply = self.server.app.handle(request, body)
        except Disconnect:
            self.close_connection = True
            self._count_arrived()
            return
        except Exception:
            LOG.exception("sandbox route %s failed", route)
            reply = graph_error(500, "internal sandbox error", error_type="MLYServerException")
        if not body.drain(DRAIN_LIMIT):
            self.close_connection = True
        self._send(reply)

    def _count_arrived(self) -> None:
        """Before hanging up, count (and drop) what already arrived in the socket's buffer but
        was never read: the part of a cut body in flight (``wire_bytes_unread``)."""
        sock = self.connection
        try:
            sock.setblocking(False)
            while data := sock.recv(1 << 18):
                self.server.app.stats.add_unread(len(data))
        except OSError:  # nothing more has arrived (EAGAIN), or the client is gone
            return

    def _send(self, reply: Reply) -> None:
        if self.request_version == "HTTP/0.9":  # or unparsable: answer with HTTP/1.1 framing
            self.request_version = self.protocol_version
            self.close_connection = True
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests and unknown methods get a JSON error too, then the connection ends."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(graph_error(code, text))

    def log_message(self, format: str, *args: Any) -> None:
        line = f"{self.address_string()} {format % args}"
        if self.server.verbose:
            sys.stderr.write(f"sandbox: {line}\n")
        else:
            LOG.debug(line)


class _CountingReader:
    """A socket's buffered reader that counts every byte it hands out: what came over the wire
    (request lines, headers, chunk framing and bodies), for ``wire_bytes_received``."""

    def __init__(self, raw: Any, count: Callable[[int], None]) -> None:
        self._raw = raw
        self._count = count

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._raw.read(size)
        self._count(len(data))
        return data

    def read1(self, size: int = -1, /) -> bytes:
        data: bytes = self._raw.read1(size)
        self._count(len(data))
        return data

    def readline(self, size: int = -1, /) -> bytes:
        data: bytes = self._raw.readline(size)
        self._count(len(data))
        return data

    def close(self) -> None:
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so :meth:`close_connections` can end idle keep-alives on stop."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: SandboxApp, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down and wait up to ``timeout`` s for its thread."""
        with self._open_lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for _, thread in open_now:
            thread.join(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        LOG.debug("sandbox connection from %s failed", client_address, exc_info=True)


class Sandbox:
    """A local Mapillary-compatible server keeping everything under ``data_dir``.

    The socket is bound at construction (``port=0`` picks a free port), so :attr:`url` is known
    before :meth:`start`. A stopped sandbox cannot be started again: make a new one on the same
    ``data_dir`` to get the same state back. Usable as a context manager (start … stop).
    """

    def __init__(
        self,
        data_dir: Path,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "sandbox_user",
        verbose: bool = False,
        faults: FaultHook | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._store = SandboxStore(data_dir, clock)
        self._app = SandboxApp(self._store, token, username, clock)
        if faults is not None:
            self._app.faults = faults
        try:
            self._server = _Server((host, port), self._app, verbose)
        except OSError:
            self._store.close()
            raise
        self._thread: threading.Thread | None = None
        self._serving = False
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{_url_host(str(bound_host))}:{bound_port}"
        self.upload_endpoint = f"{self.url}/upload"
        self.graph_endpoint = self.url

    @property
    def app(self) -> SandboxApp:
        """The route logic, for adding routes (e.g. :mod:`daemon.sandbox.graph_archive`)."""
        return self._app

    @property
    def faults(self) -> FaultHook:
        """The fault hook consulted at the start of every request (replaceable at run time)."""
        return self._app.faults

    @faults.setter
    def faults(self, hook: FaultHook) -> None:
        self._app.faults = hook

    def start(self) -> Sandbox:
        """Serve in a daemon thread; returns self."""
        self._mark_serving()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(POLL_INTERVAL_S,),
            name=f"sandbox {self.url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another thread."""
        self._mark_serving()
        self._server.serve_forever(POLL_INTERVAL_S)

    def _mark_serving(self) -> None:
        if self._serving:
            raise RuntimeError("a sandbox serves only once; make a new one on the same data_dir")
        self._serving = True

    def stop(self) -> None:
        """Stop serving, end open connections, close the socket and the store. Idempotent."""
        if self._serving:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._server.close_connections(STOP_JOIN_TIMEOUT_S)
        self._server.server_close()
        self._store.close()

    def clusters(self) -> list[dict[str, Any]]:
        """Every finished cluster, in creation order (the body of ``GET /_sandbox/clusters``)."""
        return [c.as_json() for c in self._store.clusters()]

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(
    port: int,
    data_dir: Path,
    token: str,
    host: str = "127.0.0.1",
    *,
    verbose: bool = False,
    faults: FaultHook | None = None,
) -> None:
    """Run a sandbox until SIGINT or SIGTERM; prints one line with its URLs first.

    Must be called from the main thread (it installs signal handlers, restored on return).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(
            data_dir, token, host=host, port=port, verbose=verbose, faults=faults
        ) as sandbox:
            print(
                f"sandbox serving {sandbox.url} (upload endpoint {sandbox.upload_endpoint},"
                f" graph endpoint {sandbox.graph_endpoint}), data in {data_dir}",
                flush=True,
            )
            while not stop.wait(1.0):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
