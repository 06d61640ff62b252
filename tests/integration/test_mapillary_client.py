"""Our httpx clients against the sandbox, and against a tiny stub for what the sandbox cannot do
(yet): Retry-After, malformed 2xx bodies, cut responses, slow answers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import piexif
import pytest

from daemon import __version__, errors, synth
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.mapillary import GraphClient, UploadService, session_key
from daemon.sandbox import Sandbox
from tests.conftest import ManualClock
from tests.local_http import LocalServer

TOKEN = "client-test-token-5f3a"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as sb:
        yield sb


@pytest.fixture
def uploads(sandbox: Sandbox) -> Iterator[UploadService]:
    with UploadService(sandbox.upload_endpoint, TOKEN, chunk_size=10_000) as service:
        yield service


@pytest.fixture
def graph(sandbox: Sandbox) -> Iterator[GraphClient]:
    with GraphClient(sandbox.graph_endpoint, TOKEN) as client:
        yield client


def stored(sandbox: Sandbox, key: str) -> bytes:
    """The bytes the sandbox holds for ``key``."""
    return httpx.get(f"{sandbox.url}/_sandbox/sessions/{key}").content


# --- session keys ------------------------------------------------------------------------------


def test_session_key_is_mapillary_tools_shape() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    assert session_key(md5, ".jpg") == f"mly_tools_{md5}.jpg"
    assert session_key(md5.upper(), ".MP4") == f"mly_tools_{md5}.mp4"
    for bad_md5, bad_suffix in (
        (md5[:-1], ".jpg"),
        ("g" * 32, ".jpg"),
        (md5, "jpg"),
        (md5, ".a/b"),
    ):
        with pytest.raises(ValueError):
            session_key(bad_md5, bad_suffix)


# --- upload service against the sandbox --------------------------------------------------------


def test_fetch_offset_of_unknown_session_is_zero(uploads: UploadService) -> None:
    assert uploads.fetch_offset("mly_tools_unknown.jpg") == 0


def test_upload_streams_everything_and_reports_progress(
    sandbox: Sandbox, uploads: UploadService
) -> None:
    data = os.urandom(25_000)
    key = session_key(hashlib.md5(data).hexdigest(), ".jpg")
    seen: list[int] = []

    handle = uploads.upload(key, io.BytesIO(data), 0, seen.append)  # a file: piece by piece

    assert seen == [10_000, 20_000, 25_000]
    assert uploads.fetch_offset(key) == 25_000
    assert stored(sandbox, key) == data
    assert handle.startswith("3:") and uploads.upload(key, data, 25_000) == handle
    again = data[::-1]
    key = session_key(hashlib.md5(again).hexdigest(), ".jpg")
    seen.clear()
    uploads.upload(key, again, 0, seen.append)  # bytes: one piece
    assert seen == [25_000] and stored(sandbox, key) == again


class ClientCrash(Exception):
    pass


def test_upload_resumes_from_a_file_after_the_client_died(
    sandbox: Sandbox, uploads: UploadService, tmp_path: Path
) -> None:
    data = os.urandom(50_000)
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    key = session_key(hashlib.md5(data).hexdigest(), ".mp4")

    def crash_after_two_pieces(offset: int) -> None:
        if offset >= 20_000:
            raise ClientCrash

    with path.open("rb") as source, pytest.raises(ClientCrash):
        uploads.upload(key, source, 0, crash_after_two_pieces)
    offset = wait_for_stable_offset(uploads, key)
    assert 0 < offset < len(data)
    with path.open("rb") as source:
        uploads.upload(key, source, offset)

    assert stored(sandbox, key) == data


def wait_for_stable_offset(uploads: UploadService, key: str) -> int:
    """The offset once the server has stopped receiving the abandoned body."""
    previous, deadline = -1, time.monotonic() + 5
    while (offset := uploads.fetch_offset(key)) != previous:
        assert time.monotonic() < deadline
        previous = offset
        time.sleep(0.1)
    return offset


def test_wrong_offset_is_a_retriable_412(uploads: UploadService) -> None:
    uploads.upload("k.jpg", b"0123456789", 0)

    with pytest.raises(errors.UploadError) as caught:
        uploads.upload("k.jpg", b"0123456789", 4)

    error = caught.value
    assert type(error) is errors.UploadError
    assert (error.status, error.retriable, error.error_type) == (412, True, "OffsetInvalidError")
    assert "POST /upload/k.jpg" in str(error) and "412" in str(error)
    assert "10 bytes" in str(error)


def test_offset_outside_the_source_is_refused_locally(uploads: UploadService) -> None:
    with pytest.raises(ValueError):
        uploads.upload("k.jpg", b"abc", 4)


def test_wrong_token_is_an_auth_error_that_hides_the_token(sandbox: Sandbox) -> None:
    secret = "wrong-token-that-must-not-leak"
    with (
        UploadService(sandbox.upload_endpoint, secret) as uploads,
        GraphClient(sandbox.graph_endpoint, secret) as graph,
    ):
        calls = (
            lambda: uploads.fetch_offset("k.jpg"),
            lambda: uploads.upload("k.jpg", b"abc", 0),
            graph.me,
            lambda: graph.finish_upload("3:x", "zip"),
        )
        for call in calls:
            with pytest.raises(errors.AuthError) as caught:
                call()
            assert caught.value.status == 401
            assert "Invalid OAuth access token" in str(caught.value)
            assert secret not in str(caught.value) and secret not in repr(caught.value.args)


# --- Graph API against the sandbox -------------------------------------------------------------


def test_me_names_the_user(graph: GraphClient) -> None:
    me = graph.me()
    assert me["username"] == "sandbox_user" and me["id"].isdigit()


def jpeg_with_description(seed: int) -> bytes:
    description = json.dumps({"MAPLatitude": 46.05 + seed / 1000, "MAPLongitude": 14.5})
    return synth.jpeg_bytes(
        seed, exif=piexif.dump({"0th": {piexif.ImageIFD.ImageDescription: description}})
    )


def test_bundle_upload_and_idempotent_finish(
    sandbox: Sandbox, uploads: UploadService, graph: GraphClient
) -> None:
    handles = []
    for seed in range(3):
        image = jpeg_with_description(seed)
        key = session_key(hashlib.md5(image).hexdigest(), ".jpg")
        handles.append(uploads.upload(key, image, uploads.fetch_offset(key)))
    doc = {"image_handles": handles, "upload_type": "images", "version": "1"}
    manifest_handle = uploads.upload("uuid_m.json", json.dumps(doc).encode(), 0)

    cluster_id = graph.finish_upload(manifest_handle, "mly_bundle_manifest")

    assert graph.finish_upload(manifest_handle, "mly_bundle_manifest") == cluster_id
    (cluster,) = sandbox.clusters()
    assert cluster["cluster_id"] == cluster_id
    assert [i["handle"] for i in cluster["images"]] == handles


def test_finish_with_organization(
    sandbox: Sandbox, uploads: UploadService, graph: GraphClient
) -> None:
    handle = uploads.upload("mly_tools_v.mp4", b"\x00" * 100, 0)
    graph.finish_upload(handle, "mly_camm_video", organization_id="777")
    assert sandbox.clusters()[0]["organization_id"] == "777"


def test_finish_of_a_forged_handle_is_a_plain_400(graph: GraphClient) -> None:
    with pytest.raises(errors.UploadError) as caught:
        graph.finish_upload("3:Zm9v:YmFy:x:e:1:sig", "zip")

    error = caught.value
    assert type(error) is errors.UploadError
    assert (error.status, error.retriable, error.error_type) == (400, None, "MLYApiException")
    assert "POST /finish_upload" in str(error) and "400" in str(error)
    assert "signature" in str(error)


def test_unknown_file_type_is_refused_locally(graph: GraphClient) -> None:
    with pytest.raises(ValueError):
        graph.finish_upload("3:x", "tarball")


# --- a stub for answers the sandbox does not give ----------------------------------------------


@dataclass
class Canned:
    """What the stub answers: ``status``, ``headers``, ``body``; ``send_only`` bytes of the body
    and then hang up (a cut); ``delay`` seconds before answering."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    send_only: int | None = None
    delay: float = 0.0


class Stub:
    def __init__(self) -> None:
        self.canned = Canned()
        self.requests: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.requests.append(dict(self.headers.items()))
                self._consume_body()
                canned = stub.canned
                time.sleep(canned.delay)
                self.send_response(canned.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(canned.body)))
                for name, value in canned.headers.items():
                    if name != "Date":  # sent by send_response, see date_time_string
                        self.send_header(name, value)
                self.end_headers()
                self.wfile.write(canned.body[: canned.send_only])
                if canned.send_only is not None:
                    self.close_connection = True

            do_POST = do_GET

            def date_time_string(self, timestamp: float | None = None) -> str:
                """The ``Date`` header: the canned one if any, else the real time."""
                canned = stub.canned.headers
                return canned["Date"] if "Date" in canned else super().date_time_string(timestamp)

            def _consume_body(self) -> None:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    while (size := int(self.rfile.readline(), 16)) > 0:
                        self.rfile.read(size + 2)
                    self.rfile.readline()
                else:
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.local = LocalServer(Handler)
        self.url = self.local.url

    def close(self) -> None:
        self.local.close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def upload_error_from(
    stub: Stub, canned: Canned, clock: Clock = SYSTEM_CLOCK
) -> errors.UploadError:
    """What ``UploadService.upload`` raises when the stub answers ``canned``."""
    stub.canned = canned
    with (
        UploadService(stub.url, TOKEN, clock=clock, timeout=2) as uploads,
        pytest.raises(errors.UploadError) as caught,
    ):
        uploads.upload("k.jpg", b"abc", 0)
    return caught.value


@pytest.mark.parametrize(
    ("canned", "expected"),
    [
        (Canned(429, headers={"Retry-After": "7"}), 7.0),
        (Canned(503, headers={"Retry-After": "Mon, 01 Jun 2026 12:01:30 GMT", "Date": ""}), 90.0),
        (Canned(503, headers={"Retry-After": "Mon, 01 Jun 2026 11:00:00 GMT", "Date": ""}), 0.0),
        # The server's own Date is the reference: right even when the local clock is years off.
        (
            Canned(
                503,
                headers={
                    "Retry-After": "Sun, 01 Jan 2034 00:00:40 GMT",
                    "Date": "Sun, 01 Jan 2034 00:00:00 GMT",
                },
            ),
            40.0,
        ),
        (Canned(429, b'{"backoff": 2500}'), 2.5),
        (Canned(429, b'{"backoff": 2500}', {"Retry-After": "1"}), 1.0),
        (Canned(500, headers={"Retry-After": "soon"}), None),
        (Canned(500, b"<html>oops</html>"), None),
    ],
    ids=[
        "seconds",
        "http-date",
        "past-date",
        "http-date-vs-server-date",
        "backoff-ms",
        "header-wins",
        "garbage",
        "none",
    ],
)
def test_retry_after(
    stub: Stub, clock: ManualClock, canned: Canned, expected: float | None
) -> None:
    clock.wall = NOW
    error = upload_error_from(stub, canned, clock)

    assert type(error) is errors.UploadError
    assert error.status == canned.status
    assert error.retry_after == expected


def test_rate_limit_envelope_is_kept(stub: Stub) -> None:
    body = {
        "debug_info": {
            "retriable": False,
            "type": "RequestRateLimitedError",
            "message": "slow down",
        }
    }
    error = upload_error_from(stub, Canned(400, json.dumps(body).encode()))

    assert (error.status, error.retriable, error.error_type) == (
        400,
        False,
        "RequestRateLimitedError",
    )
    assert "slow down" in str(error)


@pytest.mark.parametrize(
    "canned",
    [
        Canned(
            400,
            b'{"debug_info": {"retriable": false, "type": "NotAuthorizedError", "message": "no"}}',
        ),
        Canned(
            400, b'{"error": {"message": "Session expired", "type": "OAuthException", "code": 190}}'
        ),
        Canned(403, b"Forbidden"),
    ],
    ids=["not-authorized", "graph-190", "plain-403"],
)
def test_auth_failures_in_other_shapes(stub: Stub, canned: Canned) -> None:
    assert isinstance(upload_error_from(stub, canned), errors.AuthError)


def test_a_token_echoed_by_the_server_is_redacted(stub: Stub) -> None:
    error = upload_error_from(
        stub, Canned(400, f'{{"error": {{"message": "bad {TOKEN}"}}}}'.encode())
    )
    assert TOKEN not in str(error) and "<token>" in str(error)


def test_error_excerpt_is_short(stub: Stub) -> None:
    error = upload_error_from(stub, Canned(502, b"x" * 10_000))
    assert len(str(error)) < 300


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"handle": "x"}', b'{"h": ""}'],
    ids=["text", "list", "no-h", "empty-h"],
)
def test_bad_2xx_upload_answer_is_a_protocol_error(stub: Stub, body: bytes) -> None:
    error = upload_error_from(stub, Canned(200, body))
    assert isinstance(error, errors.ProtocolError)
    assert "POST /k.jpg" in str(error) and "200" in str(error)


@pytest.mark.parametrize(
    "body", [b"{}", b'{"offset": "12"}', b'{"offset": -1}', b'{"offset": true}']
)
def test_bad_offset_answer_is_a_protocol_error(stub: Stub, body: bytes) -> None:
    stub.canned = Canned(200, body)
    with UploadService(stub.url, TOKEN) as uploads, pytest.raises(errors.ProtocolError):
        uploads.fetch_offset("k.jpg")


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"cluster_id": null}', b'{"cluster_id": ""}', b"oops"],
    ids=["missing", "null", "empty", "text"],
)
def test_bad_finish_answer_is_a_protocol_error(stub: Stub, body: bytes) -> None:
    stub.canned = Canned(200, body)
    with GraphClient(stub.url, TOKEN) as graph, pytest.raises(errors.ProtocolError):
        graph.finish_upload("3:x", "zip")


def test_integer_cluster_ids_are_accepted(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"cluster_id": 12345}')
    with GraphClient(stub.url, TOKEN) as graph:
        assert graph.finish_upload("3:x", "zip") == "12345"


def test_me_without_username_is_a_protocol_error(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"id": "1"}')
    with GraphClient(stub.url, TOKEN) as graph, pytest.raises(errors.ProtocolError):
        graph.me()


def test_headers_sent(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"h": "handle"}')
    with UploadService(stub.url, TOKEN) as uploads:
        uploads.upload("k.jpg", io.BytesIO(b"abcdef"), 2)

    (headers,) = stub.requests
    assert headers["Authorization"] == f"OAuth {TOKEN}"
    assert headers["User-Agent"] == f"mapillaryd/{__version__}"
    assert headers["Offset"] == "2" and headers["X-Entity-Name"] == "k.jpg"
    assert headers["Transfer-Encoding"] == "chunked"


def test_bytes_in_memory_go_with_their_length(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"h": "handle"}')
    progress: list[int] = []
    with UploadService(stub.url, TOKEN) as uploads:
        uploads.upload("k.jpg", b"abcdef", 2, progress.append)
        uploads.upload("k.jpg", b"abcdef", 6, progress.append)  # nothing left: an empty body

    first, empty = stub.requests
    assert (first["Offset"], first["Content-Length"]) == ("2", "4")
    assert "Transfer-Encoding" not in first
    assert (empty["Offset"], empty["Content-Length"]) == ("6", "0")
    assert progress == [6]


# --- no usable response --------------------------------------------------------------------------


def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with (
            UploadService(f"http://127.0.0.1:{port}", TOKEN) as uploads,
            pytest.raises(errors.TransportError) as caught,
        ):
            uploads.fetch_offset("k.jpg")
    assert caught.value.status is None and "GET /k.jpg" in str(caught.value)


def test_cut_response_is_a_transport_error(stub: Stub) -> None:
    error = upload_error_from(stub, Canned(200, b'{"h": "a-long-handle-value"}', send_only=5))
    assert isinstance(error, errors.TransportError)


def test_slow_answer_is_a_transport_error(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"offset": 0}', delay=1.0)
    with (
        UploadService(stub.url, TOKEN, timeout=0.2) as uploads,
        pytest.raises(errors.TransportError),
    ):
        uploads.fetch_offset("k.jpg")


def test_read_timeout_grows_with_the_bytes_left(stub: Stub) -> None:
    stub.canned = Canned(200, b'{"h": "handle"}', delay=0.6)
    with UploadService(stub.url, TOKEN, timeout=0.2) as uploads:
        assert uploads.upload("big.mp4", bytes(100 * 1024), 0) == "handle"  # 2 s to answer
        with pytest.raises(errors.TransportError):
            uploads.upload("small.mp4", bytes(1024), 0)  # 0.2 s to answer
