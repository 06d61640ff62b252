"""Offline as a state and upload windows, through the real daemon (issue #5: "Offline is
detected and shown as a state, with a quiet log (one line when it starts, one when it ends)";
"upload windows (only between given hours)").

* Offline: the daemon runs with its upload endpoint on a port where nothing listens (the
  connection is refused, as with no network or a service that is down). ``status`` shows the
  offline state; the log says so once however many files wait; when the sandbox starts on
  that port, everything is uploaded, once, and one line says the upstream is back.
* Windows: with the only upload window hours away, images are processed and queued but not a
  byte is sent; ``status`` says when the window opens.
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta
from pathlib import Path

from daemon import synth
from daemon.sandbox import Sandbox
from tests.e2e.harness import TOKEN, Daemon, wait_until, write_config

FRAMES = 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def env_for(url: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(
        MAPILLARY_TOKEN=TOKEN,
        MAPILLARY_UPLOAD_ENDPOINT=f"{url}/upload",
        MAPILLARY_GRAPH_API_ENDPOINT=url,
    )
    return env


def test_offline_is_one_quiet_state_and_uploads_resume(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    port = free_port()
    cfg = write_config(tmp_path, [card])
    daemon = Daemon(cfg, env_for(f"http://127.0.0.1:{port}"), tmp_path / "daemon.log")
    daemon.start()
    try:
        synth.write_drive(card, FRAMES)
        wait_until(
            lambda: daemon.status().get("offline") is not None, 90, "the offline state in status"
        )
        # Let several retry rounds pass while offline: the log must not grow per file.
        wait_until(
            lambda: (
                sum(1 for e in log_events(daemon.log) if e.get("event") == "upload_retry_scheduled")
                == 0
                and daemon.status()["items"]["queued"] == FRAMES
            ),
            60,
            "all frames queued, none logged as a retry",
        )
        rep = daemon.status()
        assert "refused" in rep["offline"]["error"].lower() or "connect" in rep["offline"]["error"]
        with Sandbox(tmp_path / "sandbox", TOKEN, port=port) as sandbox:
            wait_until(lambda: daemon.status()["items"]["done"] == FRAMES, 120, "all uploaded")
            [cluster] = sandbox.clusters()
            assert len(cluster["images"]) == FRAMES
            assert daemon.status()["offline"] is None
    finally:
        assert daemon.stop() == 0
    events = [e.get("event") for e in log_events(daemon.log)]
    assert events.count("upstream_offline") == 1, events
    assert events.count("upstream_online") == 1, events


def test_outside_the_upload_window_nothing_is_sent(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    # One window, starting three hours from now (UTC, the config's [process] time_zone).
    opens = datetime.utcnow().replace(second=0, microsecond=0) + timedelta(hours=3)  # noqa: DTZ003
    closes = opens + timedelta(hours=1)
    window = f"{opens:%H:%M}-{closes:%H:%M}"
    with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
        cfg = write_config(tmp_path, [card])
        text = cfg.read_text(encoding="utf-8")
        assert "\n[upload]\n" in text
        cfg.write_text(text.replace("\n[upload]\n", f'\n[upload]\nwindows = ["{window}"]\n'))
        daemon = Daemon(cfg, env_for(sandbox.url), tmp_path / "daemon.log")
        daemon.start()
        try:
            synth.write_drive(card, FRAMES)
            wait_until(
                lambda: daemon.status()["items"]["queued"] == FRAMES, 90, "all frames queued"
            )
            wait_until(
                lambda: (daemon.status().get("window") or {}).get("open") is False,
                30,
                "the closed window in status",
            )
            rep = daemon.status()
        finally:
            assert daemon.stop() == 0
        assert rep["window"]["windows"] == window
        assert rep["window"]["next_change"].startswith(f"{opens:%Y-%m-%dT%H:%M}")
        stats = sandbox.app.stats.snapshot()
    assert stats["bytes_received"] == 0, stats
    requests = stats["requests"]
    assert isinstance(requests, dict)
    assert not any("upload" in route for route in requests), stats
