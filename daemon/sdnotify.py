"""systemd's notify protocol, spoken without libsystemd (sd_notify(3)).

The protocol is one datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means Linux's abstract namespace), the payload newline-separated
``KEY=VALUE`` lines. Without ``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op.

What the daemon sends:

* ``READY=1`` once start-up is over (queue open, stale leases freed, watchers and workers up);
* ``WATCHDOG=1`` from the **main loop**, every half of ``$WATCHDOG_USEC``: a loop that wedges
  stops pinging and systemd restarts the service (a free-running thread would hide the wedge);
* ``STATUS=…``: the queue in one line, shown by ``systemctl status``;
* ``STOPPING=1`` when shutdown begins.

Pure parts (address parsing, the watchdog interval, the status line, when a ping is due) are
plain functions; :class:`Notifier` does the socket I/O and never raises.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Mapping

import structlog

from daemon.store.queue import Queue
from daemon.upload import HOLD_KEY

log = structlog.get_logger(__name__)

#: Test seam: ``mapillaryd run`` with this variable set to N blocks its main loop forever after
#: N ticks, so a test can see the watchdog pings stop. Never set it outside tests.
WEDGE_ENV = "MAPILLARYD_TEST_WEDGE_AFTER_TICKS"

#: The status line is refreshed at most this often (it costs a query).
STATUS_EVERY_SECONDS = 2.0


def socket_address(value: str | None) -> str | bytes | None:
    """The address to send to, from ``$NOTIFY_SOCKET``: a filesystem path, or an abstract name
    as bytes starting with NUL for ``@name``. None when unset or of a kind we do not speak
    (``vsock:`` addresses)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises. None when the watchdog is off, the value is unusable, or ``$WATCHDOG_PID`` names
    another process (the variables were inherited, not meant for us)."""
    raw = env.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(raw) / 1_000_000 / 2


def status_line(counts: Mapping[str, int], hold_reason: str | None = None) -> str:
    """One line for ``systemctl status``: what waits, what moves, what needs a person.

    >>> status_line({"queued": 3, "uploading": 1, "done": 40, "rejected": 2})
    '4 to upload (1 uploading), 40 uploaded, 2 not uploadable'
    >>> status_line({}, "auth_rejected")
    'idle; uploads held: auth_rejected'
    """
    waiting = sum(counts.get(s, 0) for s in ("ingested", "queued", "uploading", "uploaded"))
    parts = []
    if waiting:
        uploading = counts.get("uploading", 0)
        parts.append(f"{waiting} to upload" + (f" ({uploading} uploading)" if uploading else ""))
    if counts.get("done"):
        parts.append(f"{counts['done']} uploaded")
    if counts.get("held"):
        parts.append(f"{counts['held']} held")
    refused = sum(counts.get(s, 0) for s in ("rejected", "quarantined", "failed"))
    if refused:
        parts.append(f"{refused} not uploadable")
    text = ", ".join(parts) or "idle"
    return f"{text}; uploads held: {hold_reason}" if hold_reason else text


def wedge_after(env: Mapping[str, str]) -> int | None:
    """The tick count after which the test seam :data:`WEDGE_ENV` blocks the loop, if set."""
    raw = env.get(WEDGE_ENV, "")
    return int(raw) if raw.isdigit() else None


class Notifier:
    """Sends notify messages to one socket address; a no-op without an address.

    Sending never raises: a notify socket that went away must not take the daemon with it.
    The first failure is logged, later ones are not.
    """

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._warned = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        return cls(socket_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` (``KEY=VALUE`` each) as one datagram; True if it was sent."""
        if self.address is None or not lines:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(payload, self.address)
        except OSError as exc:
            with self._lock:
                warned, self._warned = self._warned, True
            if not warned:
                log.warning("sd_notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping: finishing or releasing in-flight work") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")


class Heartbeat:
    """Called once per main-loop tick: pings the watchdog when due and refreshes the status.

    ``watchdog_every`` is :func:`watchdog_interval`'s answer (None: no pings). ``wedge_after``
    is the test seam (:data:`WEDGE_ENV`): after that many ticks, :meth:`tick` never returns.
    """

    def __init__(
        self,
        notifier: Notifier,
        watchdog_every: float | None,
        *,
        wedge_after: int | None = None,
        status_every: float = STATUS_EVERY_SECONDS,
    ) -> None:
        self.notifier = notifier
        self.watchdog_every = watchdog_every
        self.status_every = status_every
        self.wedge_after = wedge_after
        self.ticks = 0
        self._next_ping = float("-inf")
        self._next_status = float("-inf")
        self._last_status: str | None = None

    def tick(self, mono: float, status: Callable[[], str]) -> None:
        """One main-loop turn at monotonic time ``mono``; ``status`` computes the status line
        (called only when a refresh is due)."""
        self.ticks += 1
        if self.wedge_after is not None and self.ticks > self.wedge_after:
            log.warning("test_wedge", ticks=self.ticks, env=WEDGE_ENV)
            threading.Event().wait()  # the seam: block this loop for good
        if not self.notifier.enabled:
            return
        lines = []
        if self.watchdog_every is not None and mono >= self._next_ping:
            lines.append("WATCHDOG=1")
            self._next_ping = mono + self.watchdog_every
        if mono >= self._next_status:
            self._next_status = mono + self.status_every
            try:
                text = status()
            except Exception as exc:  # a busy or broken queue must not stop the pings
                log.warning("status_unavailable", error=str(exc))
                text = self._last_status or "status unavailable"
            if text != self._last_status:
                self._last_status = text
                lines.append(f"STATUS={text}")
        if lines:
            self.notifier.send(*lines)


def queue_status(queue: Queue) -> str:
    """:func:`status_line` of what ``queue`` holds now."""
    raw = queue.get_meta(HOLD_KEY)
    hold = json.loads(raw).get("reason") if raw else None
    return status_line(queue.counts(), hold)
