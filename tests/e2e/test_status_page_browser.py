"""The status page in a real browser: Debian's chromium, headless, driven with Playwright, against
``mapillaryd run`` as a subprocess uploading to the sandbox (issue #7, point 2).

The page's numbers are checked against ``mapillaryd status --json`` (a separate process reading
the queue), the pause and resume buttons are clicked and the daemon is seen to obey them (the
sandbox receives nothing while paused), ``/metrics`` is parsed with Prometheus' own parser, and a
screenshot is saved under the test's tmp directory (its path is printed).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from daemon.status import needs_attention
from tests.e2e.harness import Daemon, daemon_env, wait_until, write_config

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FRAMES = 10


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of a fresh headless chromium (empty profile in tmp_path)."""
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 412, "height": 915},  # a phone
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            context.close()


def _upload_posts(sandbox: Sandbox) -> int:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/stats", timeout=10) as r:
        return int(json.loads(r.read())["requests"].get("POST /upload/{session_key}", 0))


def _page_numbers(page: Any, states: list[str]) -> dict[str, int]:
    numbers = {s: int(page.inner_text(f"#count-{s}")) for s in states}
    for key in ("total", "attention-count", "clusters-count", "uploading-count"):
        numbers[key] = int(page.inner_text(f"#{key}"))
    return numbers


def _status_numbers(status: dict[str, Any]) -> dict[str, int]:
    numbers = dict(status["items"])
    numbers["total"] = status["total"]
    numbers["attention-count"] = len(needs_attention(status))
    numbers["clusters-count"] = len(status["clusters"])
    numbers["uploading-count"] = status["items"]["uploading"]
    return numbers


def test_the_page_in_chromium_matches_status_and_its_buttons_pause_the_daemon(
    tmp_path: Path, browser_page: Any
) -> None:
    page = browser_page
    card = tmp_path / "card"
    card.mkdir()
    cfg = write_config(tmp_path, [card], extra="\n[status]\nport = 0\n")
    log = tmp_path / "daemon.log"
    with Sandbox(tmp_path / "sandbox", "browser-test-token-88e1") as sandbox:
        env = daemon_env(sandbox)
        env["MAPILLARY_TOKEN"] = "browser-test-token-88e1"
        daemon = Daemon(cfg, env, log)
        daemon.start()
        try:
            wait_until(lambda: daemon.status()["status_page"] is not None, 30, "the status page")
            url = daemon.status()["status_page"]
            assert url.startswith("http://127.0.0.1:")

            page.goto(url)
            assert page.title().startswith("mapillaryd")
            page.click("#btn-pause")
            page.wait_for_selector("#btn-resume")  # the page reloaded, paused
            assert page.inner_text("#paused-banner").startswith("Uploads paused")
            assert daemon.status()["paused"]["by"] == "status page"

            # A drive arrives while paused: processed and queued, but nothing is sent.
            synth.write_drive(card / "DCIM", FRAMES)
            wait_until(lambda: daemon.status()["items"]["queued"] == FRAMES, 60, "the cut")
            time.sleep(2)  # workers look every 0.5 s; give them time to disobey
            assert _upload_posts(sandbox) == 0

            status = daemon.status()
            page.reload()
            states = list(status["items"])
            assert _page_numbers(page, states) == _status_numbers(status)

            page.click("#btn-resume")
            page.wait_for_selector("#btn-pause")
            wait_until(lambda: daemon.status()["items"]["done"] == FRAMES, 90, "the uploads")
            status = daemon.status()
            page.reload()
            assert _page_numbers(page, states) == _status_numbers(status)
            assert page.inner_text("#clusters-count") == "1"
            assert page.locator("svg.map polyline").count() == 1
            assert _upload_posts(sandbox) == FRAMES + 1  # the frames and the manifest

            screenshot = tmp_path / "status_page.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            print(f"status page screenshot: {screenshot}")

            from prometheus_client.parser import text_string_to_metric_families

            with urllib.request.urlopen(url + "metrics", timeout=10) as r:
                text = r.read().decode()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }
            for state, n in status["items"].items():
                assert samples[("mapillaryd_queue_items", (("state", state),))] == n
            assert samples[("mapillaryd_uploaded_bytes_total", ())] == status["uploaded_bytes"]
            assert samples[("mapillaryd_upload_retries_total", ())] == status["retries"]
            assert samples[("mapillaryd_uploads_paused", ())] == 0
        finally:
            code = daemon.stop()
            if code != 0:
                shutil.copy(log, tmp_path / "daemon-failed.log")
        assert code == 0, log.read_text()[-3000:]
