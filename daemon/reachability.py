"""Offline as a state, not an error storm. Pure: monotonic seconds in, decisions out.

In a car, no network is the normal case. When a request cannot even connect, the upstream is
*offline*: every worker stops (one log line says so), and a single **probe** — the next real
request of whichever worker asks first — goes out after a delay that grows from
``first_probe`` to ``max_probe`` (full jitter, so a fleet of Pis coming back in the same
tunnel exit does not probe in step). The first request that gets any answer ends the state
(one more log line, with how long it lasted).

Thread-safety is the caller's (:class:`daemon.upload.Upstream` holds a lock around it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: How long a probe may stay unanswered before another worker may try.
PROBE_TIMEOUT = 60.0


@dataclass
class Reachability:
    first_probe: float = 5.0
    max_probe: float = 300.0
    #: Monotonic time the offline state began; None while online.
    offline_since: float | None = None
    failed_probes: int = 0
    next_probe: float = 0.0
    probing: bool = False

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    def unreachable(self, now: float, rng: random.Random) -> bool:
        """A request could not connect at ``now``. Returns True when this starts the offline
        state (the caller logs it once)."""
        started = self.offline_since is None
        if started:
            self.offline_since, self.failed_probes = now, 0
        else:
            self.failed_probes += 1
        ceiling = min(self.max_probe, self.first_probe * 2 ** min(self.failed_probes, 16))
        self.next_probe = now + max(self.first_probe / 2, rng.uniform(0.0, ceiling))
        self.probing = False
        return started

    def reachable(self, now: float) -> float | None:
        """A request got an answer at ``now``. Returns how long the offline state lasted when
        this ends one (the caller logs it once), else None."""
        if self.offline_since is None:
            return None
        lasted = now - self.offline_since
        self.offline_since, self.failed_probes, self.probing = None, 0, False
        return lasted

    def wait(self, now: float) -> float:
        """Seconds a worker must wait before sending anything (0: go). While offline, exactly
        one caller gets 0 once the probe is due; it is the probe."""
        if self.offline_since is None:
            return 0.0
        if self.probing:
            if now < self.next_probe:
                return self.next_probe - now
            # the probe never reported back (its worker died or hangs): let another try
        elif now < self.next_probe:
            return self.next_probe - now
        self.probing = True
        self.next_probe = now + PROBE_TIMEOUT
        return 0.0
