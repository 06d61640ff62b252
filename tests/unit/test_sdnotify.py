"""sd_notify's pure parts, and the datagrams a Heartbeat sends to a real socket."""

from __future__ import annotations

import socket
from pathlib import Path

from daemon.sdnotify import Heartbeat, Notifier, socket_address, status_line, watchdog_interval


def test_notify_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == b"\0abstract/name"
    assert socket_address(None) is None and socket_address("") is None
    assert socket_address("vsock:2:1234") is None


def test_the_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_the_status_line_sums_up_the_queue() -> None:
    assert status_line({}) == "idle"
    assert status_line({"ingested": 1, "queued": 2, "uploading": 1, "done": 9}) == (
        "4 to upload (1 uploading), 9 uploaded"
    )
    assert status_line({"held": 2, "failed": 1, "quarantined": 1}, "no_token") == (
        "2 held, 2 not uploadable; uploads held: no_token"
    )


def test_a_heartbeat_pings_at_its_interval_and_sends_status_only_when_it_changes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(1)
        beat = Heartbeat(Notifier(str(path)), 5.0, status_every=2.0)
        texts = iter(["idle", "idle", "1 to upload"])
        got = []
        for mono in (0.0, 1.0, 2.0, 4.0, 5.0):
            beat.tick(mono, lambda: next(texts))
        sock.setblocking(False)
        while True:
            try:
                got.append(sock.recv(1024).decode())
            except BlockingIOError:
                break
    assert got == ["WATCHDOG=1\nSTATUS=idle", "STATUS=1 to upload", "WATCHDOG=1"]


def test_without_a_socket_nothing_is_sent_and_a_dead_socket_is_not_fatal(tmp_path: Path) -> None:
    assert not Notifier(None).send("READY=1")
    dead = Notifier(str(tmp_path / "nobody-listens"))
    assert not dead.ready("starting") and not dead.stopping()


def test_a_failing_status_query_does_not_stop_the_pings(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(1)

        def broken() -> str:
            raise RuntimeError("database is locked")

        Heartbeat(Notifier(str(path)), 5.0).tick(0.0, broken)
        assert sock.recv(1024).decode() == "WATCHDOG=1\nSTATUS=status unavailable"
