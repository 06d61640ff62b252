"""The upload service's direct path (daemon/mapillary/direct.py) against a real HTTP
server on 127.0.0.1: kept-alive connections, servers that hang up, proxies, bad replies."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import trustme

from daemon import errors
from daemon.mapillary import UploadService
from daemon.mapillary import http as http_module
from daemon.mapillary.direct import MAX_REPLY_BYTES
from daemon.mapillary.upload_service import Buffers
from tests.local_http import LocalServer

TOKEN = "body-post-token-81f"


class Server:
    """Answers every POST with a handle; counts connections and keeps what it was sent.
    ``hang_up_after_reply``: close each connection after answering, without saying so (as a
    server whose idle timeout has passed); ``reply``: the body to answer with."""

    def __init__(self) -> None:
        self.connections = 0
        self.hung_up = threading.Semaphore(0)
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.hang_up_after_reply = False
        self.reply = json.dumps({"h": "handle-1"}).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                server.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen.append((self.requestline, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.reply)))
                self.end_headers()
                self.wfile.write(server.reply)
                if server.hang_up_after_reply:
                    self.close_connection = True

            def do_GET(self) -> None:
                server.seen.append((self.requestline, dict(self.headers.items()), b""))
                reply = json.dumps({"offset": 1000}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def finish(self) -> None:
                super().finish()
                if server.hang_up_after_reply:
                    self.connection.close()
                    server.hung_up.release()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.local = LocalServer(Handler)
        self.http = self.local.http
        self.url = self.local.url

    def close(self) -> None:
        self.local.close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_bytes_and_headers_arrive_and_one_connection_serves_every_request(
    server: Server,
) -> None:
    photo = bytes(range(256)) * 4000
    with UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads:
        assert uploads.upload("a.jpg", photo, 0) == "handle-1"
        assert uploads.fetch_offset("b.jpg") == 1000
        assert uploads.upload("b.jpg", photo, 1000) == "handle-1"

    assert server.connections == 1
    (line_a, headers_a, body_a), (line_get, headers_get, _), (_, headers_b, body_b) = server.seen
    assert line_get == "GET /upload/b.jpg HTTP/1.1"
    assert "Content-Length" not in headers_get
    assert headers_get["Authorization"] == f"OAuth {TOKEN}"
    assert line_a == "POST /upload/a.jpg HTTP/1.1"
    assert body_a == photo and body_b == photo[1000:]
    assert headers_a["Authorization"] == f"OAuth {TOKEN}"
    assert (headers_a["Offset"], headers_b["Offset"]) == ("0", "1000")
    assert headers_b["X-Entity-Name"] == "b.jpg"
    assert headers_b["Content-Length"] == str(len(photo) - 1000)
    assert "Transfer-Encoding" not in headers_a


def test_a_connection_the_server_closed_while_idle_is_opened_again(server: Server) -> None:
    server.hang_up_after_reply = True
    with UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads:
        for key in ("a.jpg", "b.jpg", "c.jpg"):
            assert uploads.upload(key, b"x" * 5000, 0) == "handle-1"
            assert server.hung_up.acquire(timeout=10)  # closed before the next request

    assert server.connections == 3
    assert [body for _, _, body in server.seen] == [b"x" * 5000] * 3


def test_a_refused_connection_is_an_unreachable_upstream() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        UploadService(f"http://127.0.0.1:{port}/upload", TOKEN, timeout=5) as uploads,
        pytest.raises(errors.TransportError) as caught,
    ):
        uploads.upload("a.jpg", b"abc", 0)
    assert caught.value.unreachable
    assert "POST /upload/a.jpg" in str(caught.value)


def test_a_reply_longer_than_any_the_service_sends_is_a_transport_error(server: Server) -> None:
    server.reply = b"{" + b" " * MAX_REPLY_BYTES + b"}"
    with (
        UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads,
        pytest.raises(errors.TransportError),
    ):
        uploads.upload("a.jpg", b"abc", 0)


def test_a_proxy_in_the_environment_is_used(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path does not speak to proxies: with HTTP_PROXY set, the body goes through
    httpx, which sends it to the proxy (here the test server) with the absolute URL."""
    monkeypatch.setenv("HTTP_PROXY", server.url)
    with UploadService("http://upload.example.invalid/upload", TOKEN, timeout=5) as uploads:
        assert uploads.upload("a.jpg", b"abc", 0) == "handle-1"

    (line, _, body), *_ = server.seen
    assert line == "POST http://upload.example.invalid/upload/a.jpg HTTP/1.1"
    assert body == b"abc"


def test_no_proxy_keeps_the_connection_direct(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would fail: nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads:
        assert uploads.upload("a.jpg", b"abc", 0) == "handle-1"

    assert server.seen[0][0] == "POST /upload/a.jpg HTTP/1.1"


class Pieces:
    """A pace that lets everything through in pieces of ``size`` bytes, recording them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken: list[int] = []

    def piece(self, default: int) -> int:
        return self.size

    def take(self, size: int) -> None:
        self.taken.append(size)


@pytest.mark.parametrize("offset", [0, 3, 10, 11, 25])
@pytest.mark.parametrize("paced", [False, True])
def test_buffers_go_as_they_lie_from_any_offset(server: Server, offset: int, paced: bool) -> None:
    head, segment, tail = b"0123456789", b"S", bytes(range(100, 114))
    whole = head + segment + tail
    pace = Pieces(4) if paced else None
    progress: list[int] = []
    with UploadService(f"{server.url}/upload", TOKEN, timeout=5, pace=pace) as uploads:
        uploads.upload("a.jpg", Buffers(head, segment, tail), offset, progress.append)

    (_, headers, body), *_ = server.seen
    assert body == whole[offset:]
    assert headers["Content-Length"] == str(len(whole) - offset)
    assert progress[-1:] == ([len(whole)] if offset < len(whole) else [])
    if pace is not None:
        assert sum(pace.taken) == len(whole) - offset and max(pace.taken, default=0) <= 4
    assert bytes(Buffers(head, segment, tail)) == whole


@pytest.fixture
def tls_server(server: Server) -> Iterator[tuple[Server, trustme.CA]]:
    """``server`` behind TLS with a certificate for 127.0.0.1 from a throwaway CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.http.socket = context.wrap_socket(server.http.socket, server_side=True)
    server.url = server.url.replace("http://", "https://")
    yield server, ca


def test_tls_is_verified_on_the_direct_path(
    tls_server: tuple[Server, trustme.CA], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A certificate from a CA the client does not trust is refused before anything is sent;
    trusted (the same CA added to the client's context), the upload goes through."""
    server, ca = tls_server
    with (
        UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads,
        pytest.raises(errors.TransportError) as caught,
    ):
        uploads.upload("a.jpg", b"abc", 0)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.seen == []

    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    monkeypatch.setattr(http_module, "_tls_context", lambda: trusting)
    with UploadService(f"{server.url}/upload", TOKEN, timeout=5) as uploads:
        assert uploads.upload("a.jpg", b"abc", 0) == "handle-1"
    assert server.seen[0][0] == "POST /upload/a.jpg HTTP/1.1"


def test_an_answer_given_before_the_body_was_read_is_the_outcome() -> None:
    """A server that refuses the token as soon as it has the headers, answers and closes
    without reading the 32 MB body: the 401 is what the client reports (the uploads hold for
    the token), not the broken pipe its send ran into."""
    listener = socket.create_server(("127.0.0.1", 0))
    reason = b'{"debug_info": {"type": "NotAuthorizedError", "message": "token revoked"}}'

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(reason), reason)
            )
            conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/upload"
    try:
        with (
            UploadService(url, TOKEN, timeout=5) as uploads,
            pytest.raises(errors.AuthError) as caught,
        ):
            uploads.upload("a.jpg", b"x" * (32 << 20), 0)
    finally:
        thread.join(timeout=10)
        listener.close()
    assert caught.value.status == 401 and "token revoked" in str(caught.value)
