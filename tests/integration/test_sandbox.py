"""The sandbox as a real HTTP server on 127.0.0.1, exercised with the standard library only."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import piexif
import pytest

from daemon import synth
from daemon.sandbox import Disconnect, Reply, Request, Sandbox
from daemon.sandbox.replies import json_reply
from tests.conftest import ManualClock

TOKEN = "sandbox-test-token"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as sb:
        yield sb


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    sb: Sandbox,
    method: str,
    path: str,
    body: bytes | list[bytes] | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> Answer:
    """One request on a fresh connection; a list body is sent chunked."""
    port = int(sb.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"OAuth {token}"
    try:
        if isinstance(body, list):
            conn.request(method, path, body=iter(body), headers=all_headers, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=all_headers)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def post_bytes(sb: Sandbox, key: str, data: bytes | list[bytes], offset: int = 0) -> Answer:
    return call(sb, "POST", f"/upload/{key}", data, {"Offset": str(offset), "X-Entity-Name": key})


def offset_of(sb: Sandbox, key: str) -> int:
    answer = call(sb, "GET", f"/upload/{key}")
    assert answer.status == 200
    return int(answer.json()["offset"])


def upload(sb: Sandbox, key: str, data: bytes) -> str:
    answer = post_bytes(sb, key, [data[i : i + 1000] for i in range(0, len(data), 1000)])
    assert answer.status == 200, answer.body
    return str(answer.json()["h"])


def finish(sb: Sandbox, handle: str, file_type: str = "mly_bundle_manifest") -> Answer:
    body = json.dumps({"file_handle": handle, "file_type": file_type}).encode()
    return call(sb, "POST", "/finish_upload", body, {"Content-Type": "application/json"})


def described_jpeg(seed: int, description: dict[str, Any]) -> bytes:
    """A synthetic JPEG whose EXIF ImageDescription is ``description`` as JSON."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.ImageDescription: json.dumps(description)}})
    return synth.jpeg_bytes(seed, exif=exif)


def manifest(handles: list[str]) -> bytes:
    doc = {"image_handles": handles, "upload_type": "images", "version": "1"}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def key_of(data: bytes, suffix: str = ".jpg") -> str:
    return f"mly_tools_{hashlib.md5(data).hexdigest()}{suffix}"


def read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    while piece := sock.recv(65536):
        reply += piece
    return reply


def wait_for_offset(sb: Sandbox, key: str, expected: int) -> None:
    deadline = time.monotonic() + 5
    while offset_of(sb, key) != expected:
        assert time.monotonic() < deadline, f"offset stuck at {offset_of(sb, key)}"
        time.sleep(0.02)


# --- upload service ----------------------------------------------------------------------------


def test_unknown_session_has_offset_zero(sandbox: Sandbox) -> None:
    assert offset_of(sandbox, "mly_tools_never_seen.jpg") == 0


def test_chunked_post_stores_bytes_and_returns_a_real_shaped_handle(sandbox: Sandbox) -> None:
    data = os.urandom(5000)
    key = key_of(data)
    handle = upload(sandbox, key, data)

    assert offset_of(sandbox, key) == 5000
    assert call(sandbox, "GET", f"/_sandbox/sessions/{key}", token=None).body == data
    parts = handle.split(":")
    assert len(parts) == 7 and parts[0] == "3" and parts[4] == "e"
    assert base64.b64decode(parts[1]).decode() == key
    assert base64.b64decode(parts[2]).decode() == "image/jpeg"
    assert int(parts[5]) > time.time() + 24 * 3600


def test_content_length_post_in_several_steps(sandbox: Sandbox) -> None:
    data = os.urandom(3000)
    first = post_bytes(sandbox, "k.mp4", data[:1000])
    second = post_bytes(sandbox, "k.mp4", data[1000:], offset=1000)

    assert first.status == second.status == 200
    assert call(sandbox, "GET", "/_sandbox/sessions/k.mp4", token=None).body == data
    assert base64.b64decode(second.json()["h"].split(":")[2]) == b"video/mp4"


def test_old_per_chunk_style_is_complete_only_at_entity_length(sandbox: Sandbox) -> None:
    headers = {"X-Entity-Length": "100", "X-Entity-Type": "application/zip"}
    first = call(sandbox, "POST", "/upload/old.zip", b"z" * 50, headers | {"Offset": "0"})
    handle = first.json()["h"]

    assert finish(sandbox, handle, "zip").status == 400  # 50 of the announced 100 bytes
    second = call(sandbox, "POST", "/upload/old.zip", b"z" * 50, headers | {"Offset": "50"})
    assert second.json()["h"] == handle
    assert finish(sandbox, handle, "zip").status == 200


def test_wrong_offset_is_412_retriable_and_changes_nothing(sandbox: Sandbox) -> None:
    upload(sandbox, "s.jpg", b"a" * 10)

    answer = post_bytes(sandbox, "s.jpg", b"b" * 10, offset=3)

    assert answer.status == 412
    info = answer.json()["debug_info"]
    assert info["retriable"] is True and info["type"] == "OffsetInvalidError"
    assert "10" in info["message"]
    assert offset_of(sandbox, "s.jpg") == 10


def test_empty_post_at_the_end_returns_the_same_handle(sandbox: Sandbox) -> None:
    handle = upload(sandbox, "s.jpg", b"abc")

    again = post_bytes(sandbox, "s.jpg", b"", offset=3)
    chunked_again = post_bytes(sandbox, "s.jpg", [], offset=3)

    assert again.json()["h"] == handle == chunked_again.json()["h"]


def test_handles_differ_per_session_key(sandbox: Sandbox) -> None:
    assert upload(sandbox, "a.jpg", b"same") != upload(sandbox, "b.jpg", b"same")


def _send_half_and_vanish(
    sb: Sandbox, key: str, head: bytes, framing: str, total: int, offset: int = 0
) -> None:
    """Start a POST at ``offset`` announcing ``total`` bytes, send ``head`` only, disconnect."""
    port = int(sb.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = (
            f"POST /upload/{key} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth {TOKEN}\r\n"
            f"Offset: {offset}\r\nX-Entity-Name: {key}\r\n{framing}\r\n"
        ).encode()
        if "chunked" in framing:
            head = f"{total:x}\r\n".encode() + head  # announce the whole chunk, send part of it
        sock.sendall(request + head)


@pytest.mark.parametrize(
    "framing",
    ["Content-Length: 4000\r\n", "Transfer-Encoding: chunked\r\n"],
    ids=["sized", "chunked"],
)
def test_cut_body_keeps_what_arrived_and_resumes(sandbox: Sandbox, framing: str) -> None:
    data = os.urandom(4000)
    key = key_of(data)

    _send_half_and_vanish(sandbox, key, data[:2000], framing, len(data))
    wait_for_offset(sandbox, key, 2000)
    handle = post_bytes(sandbox, key, data[2000:], offset=2000).json()["h"]

    assert call(sandbox, "GET", f"/_sandbox/sessions/{key}", token=None).body == data
    assert handle == post_bytes(sandbox, key, b"", offset=4000).json()["h"]


def test_cut_session_cannot_be_finished_until_completed(sandbox: Sandbox) -> None:
    data = os.urandom(4000)
    key = key_of(data, ".mp4")
    first = post_bytes(sandbox, key, data[:1000])  # complete as far as that POST said
    _send_half_and_vanish(sandbox, key, data[1000:2000], "Content-Length: 3000\r\n", 3000, 1000)
    wait_for_offset(sandbox, key, 2000)

    assert finish(sandbox, first.json()["h"], "mly_camm_video").status == 400
    post_bytes(sandbox, key, data[2000:], offset=2000)
    assert finish(sandbox, first.json()["h"], "mly_camm_video").status == 200


def test_bad_offset_header_is_400(sandbox: Sandbox) -> None:
    for headers in ({}, {"Offset": "minus one"}, {"Offset": "0", "X-Entity-Name": "other"}):
        answer = call(sandbox, "POST", "/upload/s.jpg", b"x", headers)
        assert answer.status == 400, headers
        assert answer.json()["debug_info"]["retriable"] is False


# --- finish_upload -----------------------------------------------------------------------------


def _bundle(sb: Sandbox, count: int = 3) -> tuple[str, list[bytes], list[str]]:
    images = [
        described_jpeg(i, {"MAPLatitude": 46.0 + i, "MAPLongitude": 14.5}) for i in range(count)
    ]
    handles = [upload(sb, key_of(img), img) for img in images]
    return upload(sb, "uuid_manifest1.json", manifest(handles)), images, handles


def test_finish_bundle_records_images_with_descriptions(sandbox: Sandbox) -> None:
    manifest_handle, images, handles = _bundle(sandbox)

    answer = finish(sandbox, manifest_handle)

    assert answer.status == 200
    listed = call(sandbox, "GET", "/_sandbox/clusters", token=None).json()
    assert listed == sandbox.clusters()
    (cluster,) = listed
    assert cluster["cluster_id"] == answer.json()["cluster_id"]
    assert cluster["file_type"] == "mly_bundle_manifest"
    assert cluster["handle"] == manifest_handle
    assert cluster["session_key"] == "uuid_manifest1.json"
    assert cluster["organization_id"] is None
    assert [i["handle"] for i in cluster["images"]] == handles
    assert [i["md5"] for i in cluster["images"]] == [hashlib.md5(b).hexdigest() for b in images]
    assert [i["size"] for i in cluster["images"]] == [len(b) for b in images]
    assert [i["description"]["MAPLatitude"] for i in cluster["images"]] == [46.0, 47.0, 48.0]


def test_finish_is_idempotent(sandbox: Sandbox) -> None:
    manifest_handle, _, _ = _bundle(sandbox)

    first, second = finish(sandbox, manifest_handle), finish(sandbox, manifest_handle)

    assert first.status == second.status == 200
    assert first.json() == second.json()
    assert len(sandbox.clusters()) == 1
    assert finish(sandbox, manifest_handle, "zip").status == 400  # same handle, other type


def test_finish_video_with_organization(sandbox: Sandbox) -> None:
    handle = upload(sandbox, "mly_tools_x.mp4", b"\x00" * 64)
    body = {"file_handle": handle, "file_type": "mly_camm_video", "organization_id": 1234}

    answer = call(sandbox, "POST", "/finish_upload", json.dumps(body).encode())

    assert answer.status == 200
    (cluster,) = sandbox.clusters()
    assert cluster["organization_id"] == "1234" and cluster["size"] == 64
    assert "images" not in cluster


def test_handles_expire_but_finished_ones_stay_finished(tmp_path: Path, clock: ManualClock) -> None:
    with Sandbox(tmp_path / "sandbox", TOKEN, clock=clock) as sb:
        finished = upload(sb, "a.zip", b"a")
        cluster_id = finish(sb, finished, "zip").json()["cluster_id"]
        pending = upload(sb, "b.zip", b"b")
        clock.advance(8 * 24 * 3600)

        _graph_error(finish(sb, pending, "zip"), 400, "expired")
        assert finish(sb, finished, "zip").json()["cluster_id"] == cluster_id


def _graph_error(answer: Answer, status: int, fragment: str) -> dict[str, Any]:
    assert answer.status == status, answer.body
    error: dict[str, Any] = answer.json()["error"]
    assert fragment in error["message"]
    assert {"type", "code", "fbtrace_id"} <= error.keys()
    return error


def test_finish_rejects_unknown_or_forged_handles(sandbox: Sandbox) -> None:
    good = upload(sandbox, "a.jpg", described_jpeg(1, {}))
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    unknown_image = manifest([good, good.replace(good.split(":")[1], "eHl6")])

    _graph_error(finish(sandbox, "3:abc"), 400, "file_handle is invalid")
    _graph_error(finish(sandbox, forged), 400, "signature")
    _graph_error(finish(sandbox, upload(sandbox, "m.json", unknown_image)), 400, "image_handles[1]")
    assert sandbox.clusters() == []


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "manifest is not JSON"),
        (b"[]", "JSON object"),
        (b'{"upload_type": "images", "version": "1"}', "no image_handles"),
        (b'{"image_handles": [1], "upload_type": "images", "version": "1"}', "strings"),
    ],
)
def test_finish_rejects_bad_manifests(sandbox: Sandbox, content: bytes, fragment: str) -> None:
    _graph_error(finish(sandbox, upload(sandbox, "m.json", content)), 400, fragment)


def test_finish_rejects_images_without_json_description(sandbox: Sandbox) -> None:
    plain = synth.jpeg_bytes(7)
    handle = upload(sandbox, key_of(plain), plain)
    _graph_error(
        finish(sandbox, upload(sandbox, "m.json", manifest([handle]))), 400, "ImageDescription"
    )


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'{"file_handle": "x"}', b'{"file_handle": "x", "file_type": "tar"}']
)
def test_finish_rejects_bad_requests(sandbox: Sandbox, body: bytes) -> None:
    answer = call(sandbox, "POST", "/finish_upload", body)
    assert answer.status == 400
    assert answer.json()["error"]["code"] == 100


# --- Graph API and auth ------------------------------------------------------------------------


def test_me_returns_requested_fields(sandbox: Sandbox) -> None:
    full = call(sandbox, "GET", "/me?fields=id,username").json()
    only_id = call(sandbox, "GET", "/me?fields=id").json()

    assert full["username"] == "sandbox_user" and full["id"].isdigit()
    assert only_id == {"id": full["id"]}


def test_unknown_organization_is_404_graph_error(sandbox: Sandbox) -> None:
    error = _graph_error(call(sandbox, "GET", "/98765?fields=name"), 404, "98765")
    assert error["error_subcode"] == 33


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/upload/a.jpg"),
        ("POST", "/upload/a.jpg"),
        ("POST", "/finish_upload"),
        ("GET", "/me"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "OAuth wrong", "Basic " + TOKEN, "OAuth MLY|1|2"])
def test_wrong_or_missing_token_is_401_code_190(
    sandbox: Sandbox, method: str, path: str, authorization: str | None
) -> None:
    headers = (
        {"Offset": "0"}
        if authorization is None
        else {"Offset": "0", "Authorization": authorization}
    )

    answer = call(sandbox, method, path, b"{}" if method == "POST" else None, headers, token=None)

    error = _graph_error(answer, 401, "Invalid OAuth access token")
    assert error["code"] == 190 and error["type"] == "OAuthException"
    assert offset_of(sandbox, "a.jpg") == 0


def test_bearer_token_is_accepted(sandbox: Sandbox) -> None:
    answer = call(sandbox, "GET", "/me", headers={"Authorization": f"Bearer {TOKEN}"}, token=None)
    assert answer.status == 200


def test_logging_accepts_the_client_token(sandbox: Sandbox) -> None:
    body = json.dumps({"action_type": "upload_finished_upload", "properties": {}}).encode()
    assert call(sandbox, "POST", "/logging", body, token="MLY|5675|6b02").json() == {}
    assert call(sandbox, "POST", "/logging", body, token="nope").status == 401


# --- robustness --------------------------------------------------------------------------------


def test_unknown_routes_and_methods_get_json_errors(sandbox: Sandbox) -> None:
    assert call(sandbox, "GET", "/a/b/c").status == 404
    assert call(sandbox, "PUT", "/me").status == 405
    assert call(sandbox, "GET", "/finish_upload").status == 405
    for answer in (call(sandbox, "GET", "/a/b/c"), call(sandbox, "BREW", "/me")):
        assert "error" in answer.json()


def test_garbage_on_the_socket_gets_a_json_error(sandbox: Sandbox) -> None:
    port = int(sandbox.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 nonsense\r\n\r\n")
        reply = read_until_closed(sock)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.split()[1] == b"400"
    assert "error" in json.loads(rest.split(b"\r\n\r\n", 1)[1])


def test_bad_chunk_framing_is_400(sandbox: Sandbox) -> None:
    port = int(sandbox.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST /upload/f.jpg HTTP/1.1\r\nAuthorization: OAuth {TOKEN}\r\nOffset: 0\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode()
        )
        reply = read_until_closed(sock)
    assert reply.split()[1] == b"400"


def test_stats_count_routes_and_bytes(sandbox: Sandbox) -> None:
    upload(sandbox, "s.jpg", b"x" * 1234)
    offset_of(sandbox, "s.jpg")

    stats = call(sandbox, "GET", "/_sandbox/stats", token=None).json()

    assert stats["requests"]["POST /upload/{session_key}"] == 1
    assert stats["requests"]["GET /upload/{session_key}"] == 1
    assert stats["bytes_received"] == 1234


class OneFault:
    """Answers 503 to the first request on ``route``, hangs up on the second, then stops."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.seen: list[str] = []

    def before(self, request: Request) -> Reply | None:
        self.seen.append(request.route)
        nth = self.seen.count(self.route) if request.route == self.route else 0
        if nth == 1:
            return json_reply(503, {"debug_info": {"retriable": True}}, {"Retry-After": "3"})
        if nth == 2:
            raise Disconnect
        return None


def test_fault_hook_sees_every_request_and_can_answer_or_hang_up(sandbox: Sandbox) -> None:
    hook = OneFault("GET /upload/{session_key}")
    sandbox.faults = hook

    first = call(sandbox, "GET", "/upload/k.jpg")
    with pytest.raises(http.client.RemoteDisconnected):
        call(sandbox, "GET", "/upload/k.jpg")
    third = call(sandbox, "GET", "/upload/k.jpg")

    assert (first.status, first.headers["Retry-After"]) == (503, "3")
    assert third.json() == {"offset": 0}
    assert call(sandbox, "GET", "/me?fields=id").status == 200
    assert hook.seen[-1] == "GET /me"


def test_restart_keeps_sessions_handles_and_clusters(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    with Sandbox(data_dir, TOKEN) as first:
        manifest_handle, _, _ = _bundle(first)
        cluster_id = finish(first, manifest_handle).json()["cluster_id"]
        post_bytes(first, "partial.mp4", b"p" * 100)

    with Sandbox(data_dir, TOKEN) as second:
        assert offset_of(second, "partial.mp4") == 100
        assert finish(second, manifest_handle).json()["cluster_id"] == cluster_id
        size = offset_of(second, "uuid_manifest1.json")
        again = post_bytes(second, "uuid_manifest1.json", b"", offset=size)
        assert again.json()["h"] == manifest_handle
        assert len(second.clusters()) == 1


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    argv = ["--port", "0", "--data", str(tmp_path), "--token", TOKEN]
    with subprocess.Popen(
        [sys.executable, "-m", "daemon.sandbox", *argv], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[2]
            conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=5)
            conn.request("GET", "/me?fields=username", headers={"Authorization": f"OAuth {TOKEN}"})
            assert json.loads(conn.getresponse().read())["username"] == "sandbox_user"
            conn.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
