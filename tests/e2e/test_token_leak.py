"""No log line, page, API answer, metric or CLI output contains a token (issue #7, point 4).

``mapillaryd run`` (a subprocess, debug logging) starts with a token the sandbox rejects (uploads
held, the rejection recorded), is then given the right one through its token file (the hold
lifts, a drive is uploaded through a few server errors), and its status page is protected by an
access token. Everything captured is searched for all three tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.replies import Reply, graph_error
from tests.e2e.harness import Daemon, daemon_env, wait_until, write_config

pytestmark = pytest.mark.slow

GOOD = "MLYgoodtoken5d41402abc4b2a76b9719d911017c592"
REVOKED = "MLYrevokedtoken7215ee9c7d9dc229d2921a40e899ec5f"
ACCESS = "status-access-9e107d9d372bb6826bd81d3542a419d6"
FRAMES = 6


class ServerErrors:
    """The first ``n`` image uploads answer 500: retries with their messages get logged."""

    def __init__(self, n: int) -> None:
        self.left, self.lock = n, threading.Lock()

    def before(self, request: Request) -> Reply | None:
        if request.route == "POST /upload/{session_key}":
            with self.lock:
                if self.left > 0:
                    self.left -= 1
                    return graph_error(500, "An unexpected error has occurred.")
        return None


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return f"{r.status} {dict(r.headers)}\n{r.read().decode()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {dict(exc.headers)}\n{exc.read().decode()}"


def _cli(cfg: Path, env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "daemon", *args, "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return r.stdout + r.stderr


def test_no_token_appears_in_logs_pages_metrics_or_status(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    token_file, access_file = tmp_path / "token", tmp_path / "status-token"
    token_file.write_text(REVOKED + "\n")
    access_file.write_text(ACCESS + "\n")
    for f in (token_file, access_file):
        os.chmod(f, 0o600)
    extra = (
        f'\n[mapillary]\ntoken_file = "{token_file}"\n'
        f'\n[status]\nport = 0\ntoken_file = "{access_file}"\n'
    )
    cfg = write_config(tmp_path, [card], extra=extra)
    cfg.write_text(cfg.read_text().replace('level = "info"', 'level = "debug"'))
    captured: dict[str, str] = {}
    with Sandbox(tmp_path / "sandbox", GOOD, faults=ServerErrors(3)) as sandbox:
        env = daemon_env(sandbox)
        del env["MAPILLARY_TOKEN"]  # from the token file only, so it can change under way
        daemon = Daemon(cfg, env, tmp_path / "daemon.log")
        daemon.start()
        try:
            synth.write_drive(card / "DCIM", FRAMES)
            wait_until(lambda: daemon.status()["hold"] is not None, 60, "the rejected token")
            captured["status held"] = _cli(cfg, env, "status")
            captured["status --json held"] = _cli(cfg, env, "status", "--json")
            token_file.write_text(GOOD + "\n")  # the user fixes it
            wait_until(lambda: daemon.status()["items"]["done"] == FRAMES, 90, "the uploads")
            url = daemon.status()["status_page"]
            bearer = {"Authorization": f"Bearer {ACCESS}"}
            captured["page without token"] = _get(url)
            captured["page with wrong token"] = _get(url + "?token=wrong")
            captured["page"] = _get(url, bearer)
            captured["api/status"] = _get(url + "api/status", bearer)
            captured["api/tracks"] = _get(url + "api/tracks", bearer)
            captured["metrics"] = _get(url + "metrics", bearer)
            captured["status"] = _cli(cfg, env, "status")
            captured["status --json"] = _cli(cfg, env, "status", "--json")
            captured["queue list"] = _cli(cfg, env, "queue", "list", "--json")
            captured["check-config"] = _cli(cfg, env, "check-config")
        finally:
            assert daemon.stop() == 0
    captured["log"] = (tmp_path / "daemon.log").read_text()

    # What was captured is the real thing, not empty pages.
    assert "uploads_held" in captured["log"] and "sequence_uploaded" in captured["log"]
    assert "upload_retry_scheduled" in captured["log"]
    assert "status_page_request" in captured["log"]  # debug lines were written
    assert "auth_rejected" in captured["status held"]
    assert captured["page without token"].startswith("401")
    assert captured["page"].startswith("200") and 'id="count-done">6<' in captured["page"]
    assert json.loads(captured["status --json"])["items"]["done"] == FRAMES
    assert "mapillaryd_queue_items" in captured["metrics"]
    for name, text in captured.items():
        for secret in (GOOD, REVOKED, ACCESS):
            assert secret not in text, f"a token appears in {name}"
