"""The upload workers' memory of sessions: when to skip the offset request, what is progress."""

from __future__ import annotations

import pytest

from daemon.resume import ResumeMemo


@pytest.mark.parametrize(
    ("status", "known"),
    [
        (500, 1000),  # the server answered: it did not take the body
        (503, 1000),
        (429, 1000),
        (409, 1000),  # busy session
        (412, None),  # the offset was wrong: ask
        (None, None),  # no answer (cut, lost response): ask
        (200, None),  # an answer without a handle: the server may hold it all, ask
    ],
)
def test_only_an_answered_refusal_skips_the_offset_request(
    status: int | None, known: int | None
) -> None:
    memo = ResumeMemo()
    memo.refused("k", 1000, status)
    assert memo.known_offset("k") == known
    assert memo.known_offset("k") is None  # used once


def test_progress_is_an_offset_larger_than_last_time() -> None:
    memo = ResumeMemo()
    assert not memo.fetched("k", 500)  # first sight: nothing to compare with
    assert not memo.fetched("k", 500)
    assert memo.fetched("k", 900)
    assert not memo.fetched("k", 0)  # went backwards (an expired session): no progress
    assert memo.fetched("k", 10)
    assert not memo.fetched("other", 10**6)


def test_finished_forgets_the_session() -> None:
    memo = ResumeMemo()
    memo.fetched("k", 5)
    memo.refused("k", 5, 503)
    memo.finished("k")
    assert memo.known_offset("k") is None
    assert not memo.fetched("k", 6)


def test_an_offset_not_used_because_of_a_pause_is_used_next_time() -> None:
    memo = ResumeMemo()
    memo.fetched("k", 700)
    memo.unsent("k", 700)
    assert memo.known_offset("k") == 700
