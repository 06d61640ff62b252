"""Notifications: the webhook on failures needing attention and the heartbeat URL, both
rate-limited — the planner with time passed in, then real HTTP to a server on 127.0.0.1, then
the whole service: a rejected token produces one webhook, and the heartbeat stops."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from daemon import synth
from daemon.config import NotifyConfig, load_config
from daemon.notify_hooks import Health, HookPlanner, HookRequest, HookSender
from daemon.sandbox import Sandbox
from daemon.service import Service
from tests.e2e.harness import wait_until

TOKEN = "hooks-test-token-88aa"
CFG = NotifyConfig(
    webhook_url="http://127.0.0.1:9/hook",
    webhook_min_interval_seconds=60,
    heartbeat_url="http://127.0.0.1:9/ping",
    heartbeat_interval_seconds=30,
)


def kinds(requests: list[HookRequest]) -> list[str]:
    return [r.kind for r in requests]


def test_heartbeats_are_paced_and_stop_while_uploads_are_held() -> None:
    p = HookPlanner(CFG)
    ok = Health()
    assert kinds(p.plan(0, ok)) == ["heartbeat"]
    assert kinds(p.plan(29, ok)) == []
    assert kinds(p.plan(30, ok)) == ["heartbeat"]
    held = Health("auth_rejected", "401")
    sent = p.plan(61, held)
    assert kinds(sent) == ["webhook"]  # the hold is news; no heartbeat while held
    assert sent[0].body is not None and sent[0].body["events"] == ["uploads held: auth_rejected"]
    assert kinds(p.plan(200, held)) == []  # nothing new, still held: silence
    assert kinds(p.plan(201, ok)) == ["heartbeat"]


def test_webhooks_are_rate_limited_and_sum_up_what_happened_meanwhile() -> None:
    p = HookPlanner(NotifyConfig(webhook_url=CFG.webhook_url, webhook_min_interval_seconds=60))
    assert p.plan(0, Health(attention={"rejected": 5})) == []  # old news at start-up
    [first] = p.plan(1, Health(attention={"rejected": 6}))
    assert first.body is not None and first.body["events"] == ["1 more rejected"]
    assert p.plan(2, Health(attention={"rejected": 8})) == []  # within the minute
    assert p.plan(3, Health(attention={"rejected": 8, "failed": 1})) == []
    [second] = p.plan(61, Health(attention={"rejected": 8, "failed": 1}))
    assert second.body is not None
    assert second.body["events"] == ["2 more rejected", "1 more failed"]
    assert second.body["needs_attention"] == {"rejected": 8, "failed": 1}


class Recorder(BaseHTTPRequestHandler):
    """Records every request: (method, path, JSON body or None)."""

    seen: list[tuple[str, str, Any]]

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _record

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    seen: list[tuple[str, str, Any]] = []
    handler = type("H", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_sender_delivers_over_http_and_survives_a_dead_endpoint(
    receiver: tuple[str, list[tuple[str, str, Any]]],
) -> None:
    url, seen = receiver
    sender = HookSender()
    sender.submit(HookRequest("heartbeat", "GET", "http://127.0.0.1:9/nobody-listens"))
    sender.submit(HookRequest("webhook", "POST", f"{url}/hook", {"events": ["x"]}))
    sender.submit(HookRequest("heartbeat", "GET", f"{url}/ping"))
    wait_until(lambda: len(seen) == 2, 15, "two requests", interval=0.05)
    sender.close()
    assert seen == [("POST", "/hook", {"events": ["x"]}), ("GET", "/ping", None)]


def test_the_service_pings_while_healthy_and_posts_once_when_uploads_are_held(
    tmp_path: Path, receiver: tuple[str, list[tuple[str, str, Any]]]
) -> None:
    url, seen = receiver
    token_file = tmp_path / "token"
    token_file.write_text("revoked-token-0000\n")
    (tmp_path / "card").mkdir()
    with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
        cfg_path = tmp_path / "config.toml"
        cfg_path.write_text(
            f"""[state]
dir = "{tmp_path / "state"}"
[[watch]]
path = "{tmp_path / "card"}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
token_file = "{token_file}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[notify]
webhook_url = "{url}/hook"
webhook_min_interval_seconds = 600
heartbeat_url = "{url}/ping"
heartbeat_interval_seconds = 10
""",
            encoding="utf-8",
        )
        service = Service(load_config(cfg_path, env={}))
        service.hooks.every = 0.2  # read the queue's health often: a short test
        stop, ready = threading.Event(), threading.Event()
        t = threading.Thread(target=service.run, args=(stop,), kwargs={"on_ready": ready.set})
        t.start()
        try:
            assert ready.wait(10)
            wait_until(lambda: ("GET", "/ping", None) in seen, 15, "the first heartbeat")
            synth.write_drive(tmp_path / "card" / "DCIM", 2)
            wait_until(lambda: any(p == "/hook" for _, p, _ in seen), 60, "the webhook")
        finally:
            stop.set()
            t.join(30)
    hooks = [body for _, path, body in seen if path == "/hook"]
    assert len(hooks) == 1
    assert hooks[0]["hold"]["reason"] == "auth_rejected"
    assert "revoked-token-0000" not in json.dumps(seen)
