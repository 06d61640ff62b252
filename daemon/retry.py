"""Retry decisions: a pure function from a failure and an attempt count to what happens next.

Policy (mapillary_tools' classification, with what a daemon adds):

* 401/403 and ``NotAuthorizedError`` → **hold**: nothing more is sent until the token changes.
* Connection failures, timeouts, cut bodies, 5xx, 429 and ``RequestRateLimitedError`` → **retry**
  after a full-jitter exponential backoff (``uniform(0, min(cap, base·2^attempts))``), never
  sooner than a ``Retry-After``/``backoff`` the server gave (clamped to ``max_retry_after``).
  An exchange that broke under way (not a failure to connect) is retried at once the first time
  (``attempts`` 0; it is 0 again after progress), then backs off.
* 412 with ``retriable`` (the server's offset moved) → **retry at once**: the next attempt asks
  for the offset again. After a few in a row it backs off like any other failure.
* Another 4xx → retry only if the server said ``retriable: true``; else **reject** the item.
* A 2xx with content that breaks the protocol → retry with backoff (a proxy or a bad deploy is
  the likely cause, and the bytes are safe on our side).

The caller stores ``attempts`` and the resulting next-attempt time in the queue row, so the
schedule survives restarts; it resets ``attempts`` when an upload made progress (the server's
offset advanced), as mapillary_tools resets its count on every chunk sent. Randomness is a
parameter, so tests are exact.

A pause of the whole upstream (``Decision.upstream_wait``) ends for each worker at its own moment,
:func:`release_delay` after the pause's end, so the workers do not all come back at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from daemon.errors import AuthError, ProtocolError, TransportError, UploadError

IMMEDIATE_OFFSET_RETRIES = 3
#: The workers released after a pause of the whole upstream are spread over at most this long.
RELEASE_SPREAD_CAP = 10.0


class Action(StrEnum):
    RETRY = "retry"
    HOLD_AUTH = "hold_auth"
    REJECT = "reject"


@dataclass(frozen=True)
class Policy:
    base: float = 2.0
    cap: float = 900.0
    max_retry_after: float = 3600.0


@dataclass(frozen=True)
class Decision:
    """What to do after a failure. ``delay`` is seconds from now; ``reason`` a stable code.

    ``upstream_wait`` is set when the whole upstream should pause for that long (the server
    asked every client to slow down), not just this item.
    """

    action: Action
    delay: float
    reason: str
    upstream_wait: float = 0.0


def backoff(attempts: int, policy: Policy, rng: random.Random) -> float:
    """Full jitter: a uniform delay in ``[0, min(cap, base·2^attempts)]``."""
    ceiling = min(policy.cap, policy.base * (2 ** min(attempts, 32)))
    return rng.uniform(0.0, ceiling)


def decide(error: UploadError, attempts: int, policy: Policy, rng: random.Random) -> Decision:
    """Classify ``error`` (after ``attempts`` earlier failures of the same unit) into a decision."""
    if isinstance(error, AuthError):
        return Decision(Action.HOLD_AUTH, 0.0, "auth_rejected")
    server_wait = min(error.retry_after or 0.0, policy.max_retry_after)
    if isinstance(error, TransportError):
        if attempts == 0 and not error.unreachable:
            # The first break of an exchange that was under way (a cut body, a lost answer):
            # once at once — the server keeps what it got, and a glitch is the common case.
            return Decision(Action.RETRY, 0.0, "network")
        return Decision(Action.RETRY, backoff(attempts, policy, rng), "network")
    if isinstance(error, ProtocolError):
        return Decision(Action.RETRY, backoff(attempts, policy, rng), "bad_response")
    status = error.status or 0
    rate_limited = status == 429 or error.error_type == "RequestRateLimitedError"
    if rate_limited:
        wait = server_wait if error.retry_after is not None else 10.0
        delay = max(wait, backoff(attempts, policy, rng))
        return Decision(Action.RETRY, delay, "rate_limited", upstream_wait=wait)
    if status == 412 and error.retriable:
        if attempts < IMMEDIATE_OFFSET_RETRIES:
            return Decision(Action.RETRY, 0.0, "offset_changed")
        return Decision(Action.RETRY, backoff(attempts, policy, rng), "offset_changed")
    if status >= 500:
        delay = max(server_wait, backoff(attempts, policy, rng))
        return Decision(Action.RETRY, delay, "server_error", upstream_wait=server_wait)
    if error.retriable:
        return Decision(Action.RETRY, max(server_wait, backoff(attempts, policy, rng)), "retriable")
    return Decision(Action.REJECT, 0.0, f"http_{status}" if status else "rejected")


def release_delay(pause_seconds: float, pause_id: object, worker: object) -> float:
    """How long after a pause of the whole upstream ends ``worker`` waits before sending again.

    Uniform in ``[0, min(pause_seconds, RELEASE_SPREAD_CAP))``, fixed for one (pause, worker)
    pair — asking again gives the same answer — and different from worker to worker, so the end
    of a pause is not every worker at once (no retry storm). ``pause_id`` names the pause.
    """
    spread = min(max(pause_seconds, 0.0), RELEASE_SPREAD_CAP)
    if spread <= 0:
        return 0.0
    return random.Random(f"{pause_id}|{worker}").uniform(0.0, spread)
