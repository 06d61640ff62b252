"""The retry policy as a table: failure × attempts → action, delay bounds, upstream pause."""

from __future__ import annotations

import random

import pytest

from daemon.errors import AuthError, ProtocolError, TransportError, UploadError
from daemon.retry import Action, Policy, backoff, decide

POLICY = Policy(base=2.0, cap=60.0, max_retry_after=300.0)

CASES = [
    # (error, attempts, action, min delay, max delay, upstream wait, reason)
    (AuthError("401", status=401), 0, Action.HOLD_AUTH, 0, 0, 0, "auth_rejected"),
    (TransportError("reset"), 0, Action.RETRY, 0, 2, 0, "network"),
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
