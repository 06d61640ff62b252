"""The upload bandwidth limit: one token bucket shared by every upload worker.

:class:`TokenBucket` is the pure arithmetic (monotonic seconds in, seconds to wait out);
:class:`Bandwidth` applies it to real threads: :meth:`Bandwidth.take` blocks a worker until the
bytes it is about to send fit under the rate the timetable gives for the current local time
(:class:`daemon.limits.Timetable`). The rate is looked up on every call, so a timetable entry
takes effect mid-upload.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import tzinfo

from daemon.clock import Clock
from daemon.limits import Timetable

#: Seconds of traffic the bucket may hold: short bursts at most this long above the rate.
BURST_SECONDS = 0.5
#: Smallest and largest pieces handed to the connection while limited.
MIN_PIECE = 16 * 1024
MAX_PIECE = 1 << 20


@dataclass
class TokenBucket:
    """Bytes that may be sent now, refilled at ``rate`` bytes/s up to ``rate × burst``."""

    tokens: float = 0.0
    stamp: float | None = None

    def reserve(self, size: int, rate: float, now: float, burst: float = BURST_SECONDS) -> float:
        """Take ``size`` bytes at ``rate`` at monotonic time ``now``; return how many seconds the
        caller must wait before sending them (0 when they fit). The bucket may go negative: the
        next caller then waits for this one's debt too, which keeps the total under the rate."""
        capacity = rate * burst
        if self.stamp is None:
            self.tokens, self.stamp = capacity, now
        elapsed = max(0.0, now - self.stamp)
        self.tokens = min(capacity, self.tokens + elapsed * rate)
        self.stamp = max(self.stamp, now)
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / rate


def piece_size(rate: float | None, default: int) -> int:
    """How many bytes to hand the connection at a time: ``default`` when unlimited, else about
    an eighth of a second's worth, so a slow limit is smooth rather than bursty."""
    if rate is None:
        return default
    return int(min(default, max(MIN_PIECE, min(MAX_PIECE, rate / 8))))


class Bandwidth:
    """The shared limit. ``timetable`` None = unlimited (then :meth:`take` never waits)."""

    def __init__(
        self,
        clock: Clock,
        timetable: Timetable | None,
        *,
        zone: tzinfo | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.clock, self.timetable, self.zone = clock, timetable, zone
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._bucket = TokenBucket()

    def rate(self) -> float | None:
        """Bytes/s allowed now (None = unlimited)."""
        if self.timetable is None:
            return None
        return self.timetable.rate_at(self.clock.now().astimezone(self.zone))

    def piece(self, default: int) -> int:
        return piece_size(self.rate(), default)

    def take(self, size: int) -> None:
        """Block until ``size`` more bytes may be sent (returns early when stopping)."""
        rate = self.rate()
        if rate is None:
            return
        with self._lock:
            wait = self._bucket.reserve(size, rate, self.clock.monotonic())
        if wait > 0:
            self.stop.wait(wait)
