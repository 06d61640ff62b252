"""The retry policy as a table: failure × attempts → action, delay bounds, upstream pause."""

from __future__ import annotations

import random

import pytest

from daemon.errors import AuthError, ProtocolError, TransportError, UploadError
from daemon.retry import RELEASE_SPREAD_CAP, Action, Policy, backoff, decide, release_delay

POLICY = Policy(base=2.0, cap=60.0, max_retry_after=300.0)

CASES = [
    # (error, attempts, action, min delay, max delay, upstream wait, reason)
    (AuthError("401", status=401), 0, Action.HOLD_AUTH, 0, 0, 0, "auth_rejected"),
    (TransportError("reset"), 0, Action.RETRY, 0, 0, 0, "network"),  # broke under way: at once
    (TransportError("refused", unreachable=True), 0, Action.RETRY, 0, 2, 0, "network"),
    (TransportError("reset"), 3, Action.RETRY, 0, 16, 0, "network"),
    (TransportError("reset"), 30, Action.RETRY, 0, 60, 0, "network"),
    (ProtocolError("no h"), 1, Action.RETRY, 0, 4, 0, "bad_response"),
    (UploadError("429", status=429, retry_after=30), 0, Action.RETRY, 30, 30, 30, "rate_limited"),
    (UploadError("429", status=429), 0, Action.RETRY, 10, 10, 10, "rate_limited"),
    (
        UploadError("429", status=429, retry_after=99999),
        0,
        Action.RETRY,
        300,
        300,
        300,
        "rate_limited",
    ),
    (
        UploadError(
            "400", status=400, error_type="RequestRateLimitedError", retriable=False, retry_after=5
        ),
        0,
        Action.RETRY,
        5,
        5,
        5,
        "rate_limited",
    ),
    (UploadError("412", status=412, retriable=True), 0, Action.RETRY, 0, 0, 0, "offset_changed"),
    (UploadError("412", status=412, retriable=True), 5, Action.RETRY, 0, 60, 0, "offset_changed"),
    (UploadError("503", status=503), 2, Action.RETRY, 0, 8, 0, "server_error"),
    (UploadError("503", status=503, retry_after=20), 0, Action.RETRY, 20, 20, 20, "server_error"),
    (UploadError("400", status=400, retriable=True), 0, Action.RETRY, 0, 2, 0, "retriable"),
    (UploadError("400", status=400), 0, Action.REJECT, 0, 0, 0, "http_400"),
    (UploadError("404", status=404, retriable=False), 9, Action.REJECT, 0, 0, 0, "http_404"),
]


@pytest.mark.parametrize(("error", "attempts", "action", "lo", "hi", "upstream", "reason"), CASES)
def test_decision_table(
    error: UploadError,
    attempts: int,
    action: Action,
    lo: float,
    hi: float,
    upstream: float,
    reason: str,
) -> None:
    for seed in range(50):
        d = decide(error, attempts, POLICY, random.Random(seed))
        assert d.action is action
        assert d.reason == reason
        assert lo <= d.delay <= hi, (seed, d)
        assert d.upstream_wait == upstream


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    for attempts, ceiling in [(0, 2), (1, 4), (4, 32), (5, 60), (100, 60)]:
        samples = [backoff(attempts, POLICY, rng) for _ in range(400)]
        assert max(samples) <= ceiling
        assert min(samples) < ceiling * 0.1  # jitter reaches near zero…
        assert max(samples) > ceiling * 0.9  # …and near the ceiling


def test_jitter_spreads_clients_that_failed_together() -> None:
    delays = {round(backoff(6, POLICY, random.Random(seed)), 3) for seed in range(20)}
    assert len(delays) == 20


# --- more failures from the fault storm (issue #5) ----------------------------------------------

MORE_CASES = [
    # a 429 whose wait came as JSON backoff (ms → s, done by the client): the same as Retry-After
    (UploadError("429", status=429, retry_after=2.5), 0, Action.RETRY, 2.5, 2.5, 2.5),
    # …and stays the floor even when the backoff drawn is larger
    (UploadError("429", status=429, retry_after=1.0), 10, Action.RETRY, 1.0, 60, 1.0),
    # a 503 with a Retry-After beyond the clamp pauses the upstream for the clamp only
    (UploadError("503", status=503, retry_after=1e9), 0, Action.RETRY, 300, 300, 300),
    # 502 and 504 without one: the item's own backoff, no upstream pause
    (UploadError("502", status=502), 0, Action.RETRY, 0, 2, 0),
    (UploadError("504", status=504), 4, Action.RETRY, 0, 32, 0),
    # a busy session (another request is appending): retriable, backoff
    (UploadError("409", status=409, retriable=True), 1, Action.RETRY, 0, 4, 0),
    # a 403 from the upload service's envelope is a token problem, not the item's
    (AuthError("403", status=403, error_type="NotAuthorizedError"), 3, Action.HOLD_AUTH, 0, 0, 0),
    # a cut body or lost response: the network's fault, once at once, then backoff, no pause
    (TransportError("cut"), 0, Action.RETRY, 0, 0, 0),
    (TransportError("cut"), 1, Action.RETRY, 0, 4, 0),
]


@pytest.mark.parametrize(("error", "attempts", "action", "lo", "hi", "upstream"), MORE_CASES)
def test_more_decisions(
    error: UploadError, attempts: int, action: Action, lo: float, hi: float, upstream: float
) -> None:
    for seed in range(50):
        d = decide(error, attempts, POLICY, random.Random(seed))
        assert d.action is action
        assert lo <= d.delay <= hi, (seed, d)
        assert d.upstream_wait == upstream


def test_attempts_reset_on_progress_means_a_short_wait_again() -> None:
    """The caller passes attempts=0 after an advanced offset: the ceiling is ``base`` again."""
    late = [
        decide(UploadError("5", status=503), 8, POLICY, random.Random(s)).delay for s in range(200)
    ]
    reset = [
        decide(UploadError("5", status=503), 0, POLICY, random.Random(s)).delay for s in range(200)
    ]
    assert max(reset) <= POLICY.base < max(late)


def test_release_after_a_pause_is_staggered_per_worker() -> None:
    workers = range(40)
    delays = [release_delay(4.0, "pause-1", w) for w in workers]

    assert all(0 <= d < 4.0 for d in delays)
    assert len({round(d, 6) for d in delays}) == len(delays)  # not all at once
    assert max(delays) - min(delays) > 2.0  # spread over the window
    assert delays == [release_delay(4.0, "pause-1", w) for w in workers]  # stable while waiting
    assert delays != [release_delay(4.0, "pause-2", w) for w in workers]  # redrawn per pause


def test_release_spread_is_capped_and_zero_for_no_pause() -> None:
    assert max(release_delay(3600.0, 1, w) for w in range(100)) < RELEASE_SPREAD_CAP
    assert release_delay(0.0, 1, 1) == 0.0
    assert release_delay(-5.0, 1, 1) == 0.0
