"""``mapillaryd run`` under a systemd-compatible notify socket that the test itself listens on
(issue #7, point 1): READY=1 after start-up, WATCHDOG=1 pings from the main loop, STATUS= with
the queue summary, STOPPING=1 on SIGTERM; and a wedged main loop stops the pings.

The wedge is the test seam ``MAPILLARYD_TEST_WEDGE_AFTER_TICKS`` (daemon/sdnotify.py): after N
main-loop ticks the loop blocks forever, as a loop stuck on a dead card would. Nothing else in
the daemon changes; the process stays alive, so only the missing pings can tell systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from daemon.sdnotify import WEDGE_ENV
from tests.e2e.harness import TOKEN, Daemon, daemon_env, write_config

pytestmark = pytest.mark.slow

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


class NotifyListener:
    """A unix datagram socket playing systemd's notify socket; records every message."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next message as ``{KEY: VALUE}``, or None after ``timeout`` seconds of silence."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, predicate: str, value: str | None, timeout: float) -> dict[str, str]:
        """Receive until a message has ``predicate`` (equal to ``value`` unless None)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.receive(left)
            if msg is not None and predicate in msg and (value is None or msg[predicate] == value):
                return msg
        raise AssertionError(f"no {predicate}={value or '…'} within {timeout:g} s: {self.seen()}")

    def seen(self) -> list[dict[str, str]]:
        return [m for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def start(tmp_path: Path, sandbox: Sandbox, notify: str, **env: str) -> Daemon:
    card = tmp_path / "card"
    synth.write_drive(card / "DCIM", 3)
    cfg = write_config(tmp_path, [card])
    daemon = Daemon(cfg, {**daemon_env(sandbox), "NOTIFY_SOCKET": notify, **env}, tmp_path / "log")
    daemon.start()
    return daemon


def test_ready_watchdog_status_and_stopping_reach_the_notify_socket(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    daemon = start(tmp_path, sandbox, listener.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    try:
        ready = listener.wait_for("READY", "1", 30)
        assert ready["MAINPID"] == str(daemon.proc.pid if daemon.proc else 0)
        # STATUS= follows the queue: the card's three frames end up uploaded.
        listener.wait_for("STATUS", "3 uploaded", 90)
        pings_before = sum("WATCHDOG" in m for m in listener.seen())
        for _ in range(3):
            listener.wait_for("WATCHDOG", "1", 5)
        assert sum("WATCHDOG" in m for m in listener.seen()) >= pings_before + 3
        assert daemon.stop() == 0
        stopping = [m for m in listener.seen() if m.get("STOPPING") == "1"]
        while not stopping and (msg := listener.receive(2)) is not None:
            stopping = [msg] if msg.get("STOPPING") == "1" else []
        assert stopping, f"no STOPPING=1 after SIGTERM: {listener.seen()[-5:]}"
        # READY came first, before any watchdog ping.
        keys = [next(iter(m)) for m in listener.seen()]
        assert keys.index("READY") == 0
    finally:
        daemon.stop()
        listener.close()
    assert TOKEN not in (tmp_path / "log").read_text()


def test_a_wedged_main_loop_stops_the_watchdog_pings(tmp_path: Path, sandbox: Sandbox) -> None:
    # An abstract socket ("@name"), the other address form systemd may pass.
    listener = NotifyListener(f"@mapillaryd-test-{os.getpid()}-{time.monotonic_ns()}")
    daemon = start(
        tmp_path, sandbox, listener.address, WATCHDOG_USEC=str(WATCHDOG_USEC), **{WEDGE_ENV: "12"}
    )
    try:
        listener.wait_for("READY", "1", 30)
        listener.wait_for("WATCHDOG", "1", 5)
        # Pings go on until the loop wedges (12 ticks of 0.25 s), then stop for good: wait for
        # a silence of 8 ping intervals, bounded, with the process still running.
        deadline = time.monotonic() + 60
        silent = False
        while time.monotonic() < deadline:
            msg = listener.receive(4.0)
            if msg is None:
                silent = True
                break
        assert silent, "the watchdog pings never stopped"
        assert daemon.alive(), "the daemon exited instead of wedging"
        pings = [m for m in listener.seen() if "WATCHDOG" in m]
        assert pings, "no ping before the wedge"
        assert "wedge" in (tmp_path / "log").read_text()
    finally:
        if daemon.alive():
            daemon.kill9()
        listener.close()
