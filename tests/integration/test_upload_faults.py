"""The uploader against the faulty sandbox (127.0.0.1), one step at a time.

Time is a :class:`tests.conftest.ManualClock` for the uploader (pauses, retry times) and the
sandbox's fault windows; the queue is a real SQLite file. Each test asks what the server saw.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.config import MapillaryConfig
from daemon.credentials import TokenSource
from daemon.retry import RELEASE_SPREAD_CAP, Policy
from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.faults import FaultInjector, parse_spec
from daemon.sandbox.replies import Reply
from daemon.store.queue import ItemState, Queue
from daemon.upload import Endpoints, Uploader, Upstream
from tests.conftest import ManualClock
from tests.queued import queue_frames

TOKEN = "upload-faults-token-4e1"
POLICY = Policy(base=10.0, cap=60.0, max_retry_after=600.0)


@pytest.fixture
def sandbox(tmp_path: Path, clock: ManualClock) -> Iterator[Sandbox]:
    """The sandbox on the test's clock (its Retry-After windows, its Date), as the uploader."""
    hook = FaultInjector(clock=clock)
    with Sandbox(tmp_path / "sandbox", TOKEN, faults=hook, clock=clock) as sb:
        yield sb


@pytest.fixture
def queue(tmp_path: Path, clock: ManualClock) -> Iterator[Queue]:
    q = Queue.open(tmp_path / "queue.sqlite3")
    now = clock.now().timestamp()
    assert queue_frames(q, tmp_path / "frames", 3, seed=21, sequence="seq-faults", now=now) == 3
    yield q
    q.close()


def faults(sb: Sandbox, spec: dict[str, Any]) -> None:
    hook = sb.faults
    assert isinstance(hook, FaultInjector)
    hook.configure(parse_spec(json.dumps(spec), "test"))


def stats(sb: Sandbox) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sb.url}/_sandbox/stats", timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read())
    return result


def requests(sb: Sandbox) -> dict[str, int]:
    return {r: n for r, n in stats(sb)["requests"].items() if "/_sandbox/" not in r}


OPEN: list[Uploader] = []


@pytest.fixture(autouse=True)
def close_uploaders() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def make_uploader(q: Queue, sb: Sandbox, upstream: Upstream, clock: ManualClock) -> Uploader:
    """An uploader with its own HTTP clients (closed after the test)."""
    worker = Uploader(
        q,
        Endpoints(sb.upload_endpoint, sb.graph_endpoint, None, 10.0),
        upstream,
        clock,
        POLICY,
        "test-owner",
        threading.Event(),
        rng=random.Random(3),
    )
    OPEN.append(worker)
    return worker


def make_upstream(clock: ManualClock) -> Upstream:
    return Upstream(clock, TokenSource(MapillaryConfig(token_from_env=TOKEN)))


def item_rows(q: Queue) -> list[tuple[str, int]]:
    rows = q.conn.execute("SELECT state, attempts FROM items ORDER BY id").fetchall()
    return [(r[0], r[1]) for r in rows]


def test_a_429_quiets_every_worker_until_its_own_release(
    sandbox: Sandbox, queue: Queue, clock: ManualClock
) -> None:
    upstream = make_upstream(clock)
    first, second = make_uploader(queue, sandbox, upstream, clock), None
    faults(sandbox, {"rules": [{"routes": ["POST /upload/*"], "rate_limit": 1.0}]})
    assert first.step()
    faults(sandbox, {})
    seen = requests(sandbox)

    second = make_uploader(queue, sandbox, upstream, clock)
    assert not second.step()  # paused: nothing claimed, nothing sent
    clock.advance(1.0)  # the Retry-After is over, but this worker's share of the release is not
    waits = upstream.pause_remaining()
    assert 0 <= waits < 1.0  # min(1 s pause, cap) spread
    clock.advance(waits)
    assert requests(sandbox) == seen
    assert second.step()

    f = stats(sandbox)["faults"]
    assert (f["retry_after_given"], f["retry_after_violations"]) == (1, 0)
    assert item_rows(queue)[0] == (ItemState.QUEUED, 1)  # the 429'd item waits its turn
    assert item_rows(queue)[1][0] == ItemState.UPLOADED


class PauseOnOffset:
    """Pauses the client's upstream when its offset request arrives: as if another worker had
    just been told to wait, while this one is half-way through an item."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.seen: list[str] = []

    def before(self, request: Request) -> Reply | None:
        self.seen.append(request.route)
        if request.route == "GET /upload/{session_key}":
            self.upstream.pause(30, "test")
        return None


def test_a_pause_stops_an_item_already_under_way_without_counting_it(
    sandbox: Sandbox, queue: Queue, clock: ManualClock
) -> None:
    upstream = make_upstream(clock)
    hook = PauseOnOffset(upstream)
    sandbox.faults = hook
    worker = make_uploader(queue, sandbox, upstream, clock)

    assert worker.step()

    assert hook.seen == ["GET /upload/{session_key}"]  # its POST never went out
    assert item_rows(queue)[0] == (ItemState.QUEUED, 0)  # back in the queue, no attempt counted
    assert not worker.step()


def test_an_answered_failure_retries_without_asking_the_offset_again(
    sandbox: Sandbox, queue: Queue, clock: ManualClock
) -> None:
    upstream = make_upstream(clock)
    worker = make_uploader(queue, sandbox, upstream, clock)
    faults(sandbox, {"rules": [{"routes": ["POST /upload/*"], "server_error": 1.0}]})
    assert worker.step()
    faults(sandbox, {})
    before = requests(sandbox)
    clock.advance(POLICY.base * 2 + 1)

    assert worker.step()

    after = requests(sandbox)
    assert after["POST /upload/{session_key}"] == before["POST /upload/{session_key}"] + 1
    assert after.get("GET /upload/{session_key}") == before.get("GET /upload/{session_key}")
    assert item_rows(queue)[0][0] == ItemState.UPLOADED


def test_progress_resets_the_attempts(sandbox: Sandbox, queue: Queue, clock: ManualClock) -> None:
    upstream = make_upstream(clock)
    worker = make_uploader(queue, sandbox, upstream, clock)
    faults(sandbox, {"seed": 4, "rules": [{"routes": ["POST /upload/*"], "cut": 1.0}]})

    assert worker.step()  # offset 0, cut part-way: the server keeps a part
    assert item_rows(queue)[0] == (ItemState.QUEUED, 1)
    clock.advance(POLICY.base * 2 + 1)
    assert worker.step()  # the offset advanced: progress; cut again

    state, attempts = item_rows(queue)[0]
    assert (state, attempts) == (ItemState.QUEUED, 1)  # not 2: the count started again
    due = queue.conn.execute("SELECT next_attempt_at FROM items ORDER BY id").fetchone()[0]
    assert due - clock.now().timestamp() <= POLICY.base  # a first failure's wait
    assert stats(sandbox)["faults"]["faults"]["cut"] == 2


def test_a_retry_after_date_is_read_against_the_server_date(
    sandbox: Sandbox, queue: Queue, tmp_path: Path
) -> None:
    """The local clock is years off (a Pi without RTC); the wait is still about 2–3 s."""
    clock = ManualClock(datetime(2031, 1, 1, tzinfo=UTC))
    upstream = make_upstream(clock)
    worker = make_uploader(queue, sandbox, upstream, clock)
    rule = {"routes": ["GET /upload/*"], "rate_limit": 1.0, "retry_after_forms": ["date"]}
    faults(sandbox, {"rules": [rule]})

    assert worker.step()

    waits = upstream.pause_remaining()
    assert 1.0 <= waits <= 3.0 + RELEASE_SPREAD_CAP
