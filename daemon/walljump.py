"""Noticing that the wall clock jumped (a Pi without RTC syncing its clock, someone setting it).

The queue stores deadlines in wall-clock time (``next_attempt_at``, a batch's last arrival) so
they survive restarts. Within a run the monotonic clock is the truth about how much time
passed: when wall time moved by a different amount than monotonic time, the difference is a
jump, and the stored deadlines are moved by it (:meth:`daemon.store.queue.Queue.shift_schedule`)
so that every wait keeps its length — no hang after a jump back, no burst after a jump forward.

Across a restart there is no monotonic reference; deadlines absurdly far ahead are clamped at
start-up instead (:meth:`daemon.store.queue.Queue.clamp_schedule`).
"""

from __future__ import annotations

#: Wall and monotonic time may drift apart this much between two looks without it counting as a
#: jump (NTP slews the clock slowly). A suspend counts as a jump (Linux's monotonic clock stops
#: while suspended): waits then go on where they were, measured in time awake.
JUMP_THRESHOLD_SECONDS = 30.0


class JumpDetector:
    """Feed it (wall, monotonic) pairs; it says by how much the wall clock jumped since the last.

    Pure: the caller reads the clocks and acts on the answer.
    """

    def __init__(self, threshold: float = JUMP_THRESHOLD_SECONDS) -> None:
        self.threshold = threshold
        self._last: tuple[float, float] | None = None

    def check(self, wall: float, mono: float) -> float | None:
        """Seconds the wall clock jumped since the previous call (positive: forward), or None
        when it moved with the monotonic clock (within the threshold) or on the first call."""
        last, self._last = self._last, (wall, mono)
        if last is None:
            return None
        jump = (wall - last[0]) - (mono - last[1])
        return jump if abs(jump) >= self.threshold else None
