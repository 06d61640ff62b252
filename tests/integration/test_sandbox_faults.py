"""Fault injection on the real sandbox server (127.0.0.1), seen by raw HTTP and by our client."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.clock import SYSTEM_CLOCK
from daemon.errors import AuthError, TransportError, UploadError
from daemon.mapillary.graph import GraphClient
from daemon.mapillary.upload_service import UploadService
from daemon.sandbox import Sandbox
from daemon.sandbox.faults import FaultInjector, parse_spec

TOKEN = "faults-test-token"
REPO = Path(__file__).resolve().parents[2]
UPLOAD = "POST /upload/{session_key}"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN, faults=FaultInjector()) as sb:
        yield sb


class Conn:
    """One keep-alive connection to the sandbox."""

    def __init__(self, sb: Sandbox) -> None:
        port = int(sb.url.rsplit(":", 1)[1])
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        all_headers = {"Authorization": f"OAuth {TOKEN}", **(headers or {})}
        self.http.request(method, path, body=body, headers=all_headers)
        response = self.http.getresponse()
        return response.status, response.headers, response.read()

    def close(self) -> None:
        self.http.close()


def call(sb: Sandbox, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    conn = Conn(sb)
    try:
        return conn.call(method, path, body, headers)
    finally:
        conn.close()


def set_faults(sb: Sandbox, spec: dict[str, Any]) -> dict[str, Any]:
    status, _, body = call(sb, "POST", "/_sandbox/faults", json.dumps(spec).encode())
    assert status == 200, body
    reply: dict[str, Any] = json.loads(body)
    return reply


def fault_stats(sb: Sandbox) -> dict[str, Any]:
    status, _, body = call(sb, "GET", "/_sandbox/stats")
    assert status == 200
    stats: dict[str, Any] = json.loads(body)
    return stats


def offset_of(sb: Sandbox, key: str) -> int:
    status, _, body = call(sb, "GET", f"/upload/{key}")
    assert status == 200, body
    return int(json.loads(body)["offset"])


def post(sb: Sandbox, key: str, data: bytes, offset: int = 0) -> Any:
    return call(sb, "POST", f"/upload/{key}", data, Offset=str(offset), **{"X-Entity-Name": key})


def key_of(data: bytes) -> str:
    return f"mly_tools_{hashlib.md5(data).hexdigest()}.jpg"


def test_server_errors_and_the_three_retry_after_forms(sandbox: Sandbox) -> None:
    set_faults(sandbox, {"rules": [{"routes": ["GET /upload/*"], "rate_limit": 1.0}]})
    seen = []
    for _ in range(3):  # the forms take turns per session key: seconds, date, backoff
        status, headers, body = call(sandbox, "GET", "/upload/k.jpg")
        seen.append((status, headers.get("Retry-After"), json.loads(body).get("backoff")))
        time.sleep(1.05 if len(seen) < 3 else 0)  # let the window pass: not a violation

    assert [s[0] for s in seen] == [429, 429, 429]
    assert seen[0][1] == "1" and seen[0][2] is None
    assert seen[1][1] is not None and seen[1][2] is None
    assert parsedate_to_datetime(seen[1][1]).tzinfo is not None  # an HTTP date
    assert seen[2][1] is None and seen[2][2] == 1000
    assert fault_stats(sandbox)["faults"]["retry_after_violations"] == 0

    set_faults(sandbox, {"rules": [{"server_error": 1.0, "server_error_statuses": [502]}]})
    status, _, body = call(sandbox, "GET", "/me")
    assert status == 502 and "error" in json.loads(body)


def test_requests_inside_a_retry_after_window_are_violations(sandbox: Sandbox) -> None:
    set_faults(
        sandbox,
        {
            "retry_after_grace": 5,
            "rules": [{"routes": ["GET /upload/a.jpg"], "rate_limit": 1.0, "retry_after": 30}],
        },
    )
    told, other = Conn(sandbox), Conn(sandbox)
    try:
        status, _, _ = told.call("GET", "/upload/a.jpg")
        assert status == 429
        # another connection of the same client, already under way: an overlap, not a violation
        assert other.call("GET", "/upload/b.jpg")[0] == 200
        # the connection that was told to wait asks again at once: a violation, told again
        again, headers, _ = told.call("GET", "/upload/b.jpg")
    finally:
        told.close()
        other.close()

    faults = fault_stats(sandbox)["faults"]
    assert (again, headers["Retry-After"]) == (429, "30")
    assert faults["retry_after_given"] == 1
    assert faults["retry_after_overlaps"] == 1
    assert faults["retry_after_violations"] == 1
    assert faults["violations"][0]["route"] == "GET /upload/{session_key}"
    assert faults["violations"][0]["same_connection"] is True


def test_a_cut_body_keeps_its_prefix_and_resumes(sandbox: Sandbox) -> None:
    data = os.urandom(300_000)
    key = key_of(data)
    set_faults(sandbox, {"seed": 3, "rules": [{"routes": [UPLOAD], "cut": 1.0}]})

    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(sandbox, key, data)
    held = offset_of(sandbox, key)
    assert 0 < held < len(data)

    set_faults(sandbox, {})
    status, _, body = post(sandbox, key, data[held:], held)
    assert status == 200 and json.loads(body)["h"]
    assert call(sandbox, "GET", f"/_sandbox/sessions/{key}")[2] == data
    assert fault_stats(sandbox)["faults"]["faults"]["cut"] == 1


def test_a_lost_response_commits_first(sandbox: Sandbox) -> None:
    data = os.urandom(5000)
    key = key_of(data)
    set_faults(sandbox, {"rules": [{"routes": [UPLOAD], "lost_response": 1.0}]})

    with pytest.raises(http.client.RemoteDisconnected):
        post(sandbox, key, data)
    assert offset_of(sandbox, key) == len(data)  # GETs are not in the rule

    set_faults(sandbox, {})
    status, _, body = post(sandbox, key, b"", len(data))
    assert status == 200 and json.loads(body)["h"].startswith("3:")


@pytest.mark.parametrize(("expire", "check"), [(1.0, lambda n: n == 0), (0.0, lambda n: n < 6000)])
def test_an_incomplete_session_can_go_backwards(
    sandbox: Sandbox, expire: float, check: Any
) -> None:
    # Fixed bytes, so a fixed session key and cut: where the cut falls is drawn per key, and
    # the regressed offset is a fraction of what the cut left (random bytes made this flaky).
    data = random.Random(180).randbytes(10_000)
    key = key_of(data)
    set_faults(sandbox, {"rules": [{"routes": [UPLOAD], "cut": 1.0}]})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        post(sandbox, key, data)
    held = offset_of(sandbox, key)
    assert held > 0

    rule = {"routes": ["GET /upload/*"], "offset_regress": 1.0, "expire_share": expire}
    set_faults(sandbox, {"seed": 1, "rules": [rule]})
    now = offset_of(sandbox, key)

    assert now < held and check(now)
    kind = "session_expired" if expire else "offset_regress"
    assert fault_stats(sandbox)["faults"]["faults"][kind] == 1
    set_faults(sandbox, {})
    assert post(sandbox, key, data[now:], now)[0] == 200
    set_faults(sandbox, {"rules": [rule]})
    assert offset_of(sandbox, key) == len(data)  # a complete session never regresses


def test_revoked_token_outage_and_back(sandbox: Sandbox) -> None:
    set_faults(sandbox, {"revoked": True})
    assert call(sandbox, "GET", "/me")[0] == 401
    set_faults(sandbox, {"revoked": True, "revoked_status": 403})
    status, _, body = call(sandbox, "GET", "/upload/k.jpg")
    assert status == 403 and json.loads(body)["debug_info"]["type"] == "NotAuthorizedError"
    assert call(sandbox, "GET", "/_sandbox/clusters")[0] == 200  # inspection is never faulted

    set_faults(sandbox, {"outage": {"start": 0, "duration": 3600}})
    assert call(sandbox, "GET", "/me")[0] == 503
    set_faults(sandbox, {"outage": {"start": 0, "duration": 3600, "status": 0}})
    with pytest.raises(http.client.RemoteDisconnected):
        call(sandbox, "GET", "/me")
    set_faults(sandbox, {"outage": {"start": 3600, "duration": 10}})  # not yet
    assert call(sandbox, "GET", "/me")[0] == 200

    faults = fault_stats(sandbox)["faults"]["faults"]
    assert faults["revoked"] == 2 and faults["outage"] == 2


def test_bad_specs_are_refused_with_their_problems(sandbox: Sandbox) -> None:
    status, _, body = call(sandbox, "POST", "/_sandbox/faults", b'{"rules": [{"cut": 2}]}')
    assert status == 400
    assert json.loads(body)["error"]["problems"] == ["rules[0].cut: must be between 0 and 1"]
    set_faults(sandbox, {"seed": 9})
    status, _, body = call(sandbox, "GET", "/_sandbox/faults")
    assert json.loads(body)["spec"]["seed"] == 9
    toml = b'seed = 4\n[[rules]]\nroutes = ["GET /me"]\nslow = 1.0\nslow_seconds = 0.01\n'
    assert call(sandbox, "POST", "/_sandbox/faults", toml)[0] == 200
    assert call(sandbox, "GET", "/me")[0] == 200
    assert fault_stats(sandbox)["faults"]["faults"]["slow"] == 1


def test_wire_bytes_count_headers_and_framing(sandbox: Sandbox) -> None:
    data = os.urandom(20_000)
    before = fault_stats(sandbox)
    post(sandbox, key_of(data), data)
    after = fault_stats(sandbox)

    body = after["bytes_received"] - before["bytes_received"]
    wire = after["wire_bytes_received"] - before["wire_bytes_received"]
    assert body == len(data)
    # the POST's request line and headers, plus the GET /_sandbox/stats request itself
    assert len(data) + 100 < wire < len(data) + 1000


def test_our_client_reads_every_fault_as_the_right_error(sandbox: Sandbox) -> None:
    service = UploadService(sandbox.upload_endpoint, TOKEN, clock=SYSTEM_CLOCK, timeout=10)
    graph = GraphClient(sandbox.graph_endpoint, TOKEN, clock=SYSTEM_CLOCK, timeout=10)
    data = os.urandom(50_000)
    key = key_of(data)
    try:
        waits = []
        set_faults(sandbox, {"rules": [{"routes": ["GET /upload/*"], "rate_limit": 1.0}]})
        for _ in range(3):
            with pytest.raises(UploadError) as caught:
                service.fetch_offset(key)
            assert caught.value.status == 429
            assert caught.value.error_type == "RequestRateLimitedError"
            waits.append(caught.value.retry_after)
            time.sleep(max(1.05, caught.value.retry_after or 0))  # honour it
        assert waits[0] == 1.0 and waits[2] == 1.0
        assert waits[1] is not None and 1.0 <= waits[1] <= 3.0  # the date form, whole seconds

        set_faults(sandbox, {"rules": [{"routes": [UPLOAD], "cut": 1.0}]})
        with pytest.raises(TransportError):
            service.upload(key, data, 0)
        set_faults(sandbox, {"rules": [{"routes": [UPLOAD], "lost_response": 1.0}]})
        held = service.fetch_offset(key)
        with pytest.raises(TransportError):
            service.upload(key, data, held)
        set_faults(sandbox, {"revoked": True})
        with pytest.raises(AuthError):
            graph.me()
        set_faults(sandbox, {})
        assert service.fetch_offset(key) == len(data)
        assert service.upload(key, data, len(data)).startswith("3:")
        assert fault_stats(sandbox)["faults"]["retry_after_violations"] == 0
    finally:
        service.close()
        graph.close()


def test_command_line_takes_a_spec_and_refuses_a_bad_one(tmp_path: Path) -> None:
    spec = tmp_path / "faults.toml"
    spec.write_text("revoked = true\n", encoding="utf-8")
    argv = [sys.executable, "-m", "daemon", "sandbox", "--port", "0", "--data", str(tmp_path)]
    argv += ["--token", TOKEN]
    bad = subprocess.run(
        [*argv, "--faults", '{"rules": [{"cut": 7}]}'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "--faults" in bad.stderr and "rules[0].cut: must be between 0 and 1" in bad.stderr

    with subprocess.Popen(
        [*argv, "--faults", str(spec)], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = line.split()[2]
            conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=5)
            conn.request("GET", "/me", headers={"Authorization": f"OAuth {TOKEN}"})
            assert conn.getresponse().status == 401
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_spec_round_trips_through_the_route(sandbox: Sandbox) -> None:
    spec = {"seed": 2, "bandwidth": 10_000_000, "rules": [{"routes": [UPLOAD], "cut": 0.1}]}
    echoed = set_faults(sandbox, spec)
    assert parse_spec(json.dumps(echoed), "echo") == parse_spec(json.dumps(spec), "spec")
