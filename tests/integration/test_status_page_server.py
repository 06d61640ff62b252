"""The status page's HTTP server on 127.0.0.1 over a real queue, alone and inside a running
service that uploads to the sandbox."""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import control, synth, web
from daemon.config import Config, load_config
from daemon.progress import ProgressRegistry
from daemon.sandbox import Sandbox
from daemon.status import STATUS_URL_KEY, report
from daemon.store.queue import Queue
from tests.conftest import ManualClock
from tests.e2e.harness import SlowUploads, wait_until
from tests.integration.test_service import running

TOKEN = "status-page-test-token-31c8"
ACCESS = "page-access-token-77aa0c1d"


def _config(tmp: Path, extra: str = "", sandbox: Sandbox | None = None) -> Config:
    endpoints = ""
    if sandbox is not None:
        endpoints = f'upload_endpoint = "{sandbox.upload_endpoint}"\n'
        endpoints += f'graph_endpoint = "{sandbox.graph_endpoint}"'

    (tmp / "card").mkdir(exist_ok=True)
    path = tmp / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{tmp / "card"}"
[mapillary]
{endpoints}
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[upload]
retry_base_seconds = 0.1
retry_cap_seconds = 0.5
[status]
port = 0
{extra}
""",
        encoding="utf-8",
    )
    return load_config(path, env={"MAPILLARY_TOKEN": TOKEN})


@contextmanager
def _server(cfg: Config) -> Iterator[web.StatusServer]:
    server = web.start(
        cfg, lambda: Queue.open(cfg.state.database), ManualClock(), ProgressRegistry()
    )
    assert server is not None
    try:
        yield server
    finally:
        server.stop()


def _request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request, no redirect followed."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_on_loopback_it_refuses_foreign_hosts_and_unmarked_posts(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    with _server(cfg) as server:
        status, _, body = _request(server.url)
        assert status == 200 and b"mapillaryd" in body
        # DNS rebinding: a foreign name pointing at 127.0.0.1
        status, _, _ = _request(server.url, headers={"Host": "attacker.example:8686"})
        assert status == 403
        # A cross-site form cannot set the header: the pause is refused.
        status, _, _ = _request(server.url + "api/pause", "POST")
        assert status == 403
        q = Queue.open(cfg.state.database)
        try:
            assert not control.is_paused(q)
            status, _, body = _request(
                server.url + "api/pause", "POST", {"X-Requested-With": "mapillaryd"}
            )
            assert status == 200 and json.loads(body)["paused"] is True
            assert control.is_paused(q)  # in the database: the CLI and a restart agree
            assert q.get_meta(STATUS_URL_KEY) == server.url
        finally:
            q.close()
        assert _request(server.url + "nothing")[0] == 404
    q = Queue.open(cfg.state.database)
    try:
        assert q.get_meta(STATUS_URL_KEY) is None  # forgotten when it stops
    finally:
        q.close()


def test_with_a_token_every_request_must_bring_it_and_pages_never_show_it(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "access"
    token_file.write_text(ACCESS + "\n")
    cfg = _config(tmp_path, f'token_file = "{token_file}"')
    with _server(cfg) as server:
        for path in ("", "api/status", "metrics"):
            status, headers, _ = _request(server.url + path)
            assert status == 401 and "bearer" in headers["www-authenticate"].lower()
        assert _request(server.url, headers={"Authorization": "Bearer wrong-token"})[0] == 401
        assert _request(server.url + "?token=wrong-token")[0] == 401
        status, _, body = _request(server.url, headers={"Authorization": f"Bearer {ACCESS}"})
        assert status == 200 and ACCESS.encode() not in body
        # ?token= once: a cookie (not the token) and the token gone from the address bar
        status, headers, _ = _request(server.url + f"?token={ACCESS}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"].split(";")[0]
        assert ACCESS not in cookie and "HttpOnly" in headers["set-cookie"]
        for path in ("", "api/status", "metrics", "api/tracks"):
            status, _, body = _request(server.url + path, headers={"Cookie": cookie})
            assert status == 200 and ACCESS.encode() not in body
        # Any Host is fine with a token (it is what protects the page then).
        status, _, _ = _request(server.url, headers={"Cookie": cookie, "Host": "pi.local:8686"})
        assert status == 200


def test_an_unreadable_token_file_keeps_the_page_off(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'token_file = "{tmp_path / "missing"}"')
    started = web.start(
        cfg, lambda: Queue.open(cfg.state.database), ManualClock(), ProgressRegistry()
    )
    assert started is None


# --- inside the running daemon -------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str) -> None:
    req = urllib.request.Request(url, method="POST", headers={"X-Requested-With": "mapillaryd"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _upload_posts(sandbox: Sandbox) -> int:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/stats", timeout=10) as r:
        return int(json.loads(r.read())["requests"].get("POST /upload/{session_key}", 0))


def test_the_running_daemon_serves_its_report_and_obeys_the_pause_button(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    cfg = _config(tmp_path, sandbox=sandbox)
    with running(cfg):
        q = Queue.open(cfg.state.database)
        try:
            wait_until(lambda: q.get_meta(STATUS_URL_KEY) is not None, 10, "the status page")
            url = str(q.get_meta(STATUS_URL_KEY))
            _post(url + "api/pause")
            synth.write_drive(tmp_path / "card" / "DCIM", 6)
            wait_until(lambda: _get_json(url + "api/status")["items"]["queued"] == 6, 60, "a cut")
            # Queued and due, but paused: the workers look (every 0.5 s) and send nothing.
            time.sleep(2)
            assert _upload_posts(sandbox) == 0
            assert _get_json(url + "api/status")["paused"]["by"] == "status page"
            _post(url + "api/resume")
            wait_until(lambda: _get_json(url + "api/status")["items"]["done"] == 6, 60, "uploads")
            api = _get_json(url + "api/status")
            with urllib.request.urlopen(url + "metrics", timeout=10) as r:
                metrics = r.read().decode()
            cli_view = report(q, cfg=cfg)
        finally:
            q.close()
    assert _upload_posts(sandbox) == 7  # six images and the manifest
    for key in ("items", "total", "sequences", "clusters", "not_uploaded", "uploaded_bytes"):
        assert api[key] == cli_view[key], key
    assert api["paused"] is None and len(api["clusters"]) == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
    }
    assert samples[("mapillaryd_queue_items", (("state", "done"),))] == 6
    assert samples[("mapillaryd_uploaded_bytes_total", ())] == api["uploaded_bytes"] > 0
    assert samples[("mapillaryd_upload_sent_bytes_total", ())] >= api["uploaded_bytes"]


def test_uploads_in_flight_show_their_bytes(tmp_path: Path, sandbox: Sandbox) -> None:
    sandbox.faults = SlowUploads(1.0)  # each POST waits: the uploads stay in flight a while
    cfg = _config(tmp_path, sandbox=sandbox)
    seen: list[dict[str, Any]] = []
    with running(cfg):
        q = Queue.open(cfg.state.database)
        try:
            wait_until(lambda: q.get_meta(STATUS_URL_KEY) is not None, 10, "the status page")
            url = str(q.get_meta(STATUS_URL_KEY))
        finally:
            q.close()
        synth.write_drive(tmp_path / "card" / "DCIM", 12)  # three rounds of four workers

        def api_in_flight() -> bool:
            seen[:] = _get_json(url + "api/status")["uploading"]
            return any(u["total"] for u in seen)

        def page_in_flight() -> bool:
            with urllib.request.urlopen(url, timeout=10) as r:
                return "<progress" in r.read().decode()

        wait_until(api_in_flight, 60, "an upload in flight (API)", interval=0.1)
        wait_until(page_in_flight, 60, "an upload in flight (page)", interval=0.1)
        wait_until(lambda: _get_json(url + "api/status")["items"]["done"] == 12, 90, "uploads")
    first = next(u for u in seen if u["total"])
    assert 0 < first["sent"] <= first["total"]
    assert first["path"].startswith(str(tmp_path / "card" / "DCIM"))


@pytest.mark.parametrize(
    ("header", "name"),
    [("[::1]:8686", "::1"), ("[::1]", "::1"), ("localhost", "localhost"), ("a.b:80", "a.b")],
)
def test_the_host_name_is_read_from_any_host_header(header: str, name: str) -> None:
    from daemon.web.server import _hostname

    assert _hostname(header) == name
