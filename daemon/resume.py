"""What the upload workers of one run learnt about upload sessions, shared between them.

Two facts save requests and time under faults, without trusting anything the server did not say:

* After a POST that got an HTTP answer other than success or 412 (a 5xx, a 429, a busy session),
  the server told us it did not take the body; and after an offset answer that could not be
  used because the upstream was paused before the POST: the next attempt can send from that
  offset without asking for it first. If that was wrong, the server answers 412 and the offset
  is asked for again (mapillary_tools asks every time: one request more per failure).
* The offset a session had at the last attempt: an attempt that finds it larger made progress,
  and its item's attempt count starts again (its backoff is short again).

Lost on restart, which costs at most one offset request or one longer backoff.
"""

from __future__ import annotations

import threading


class ResumeMemo:
    """Per session key: the offset to send from without asking, and the last offset seen.
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, int] = {}
        self._seen: dict[str, int] = {}

    def known_offset(self, key: str) -> int | None:
        """The offset to send from without asking the server (once), or None: ask."""
        with self._lock:
            return self._known.pop(key, None)

    def fetched(self, key: str, offset: int) -> bool:
        """The server said it holds ``offset`` bytes; True if that is more than last time."""
        with self._lock:
            before = self._seen.get(key)
            self._seen[key] = offset
        return before is not None and offset > before

    def refused(self, key: str, offset: int, status: int | None) -> None:
        """A POST from ``offset`` failed with ``status`` (None: no answer at all). Only an
        error status other than 412 says the body was not taken; anything else means ask."""
        with self._lock:
            if status is not None and status >= 400 and status != 412:
                self._known[key] = offset
            else:
                self._known.pop(key, None)

    def unsent(self, key: str, offset: int) -> None:
        """The server said ``offset`` and nothing was sent since (the upstream was paused in
        between): the next attempt can send from there without asking again."""
        with self._lock:
            self._known[key] = offset

    def finished(self, key: str) -> None:
        """The session is complete; forget it."""
        with self._lock:
            self._known.pop(key, None)
            self._seen.pop(key, None)
