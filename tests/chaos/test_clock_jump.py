"""The wall clock jumping years forward or back (a Pi without RTC syncing, someone setting it):
no hang, no burst. Time is a :class:`tests.conftest.ManualClock`, moved by the test; the queue
is a real SQLite file and uploads go to the real sandbox on 127.0.0.1.

What must hold (issue #5 point 4):
* a retry wait keeps its length: after a jump *back* the item is retried when its wait is over,
  not years later (hang); after a jump *forward* it is not retried at once (burst);
* an open batch keeps its quiet window across a jump (a forward jump must not cut a drive early);
* the upstream pause is monotonic and ignores the wall clock;
* deadlines stored before the clock was set back while the daemon was down are due at start-up;
* a whole service run with jumps both ways in the middle uploads everything.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from daemon import synth
from daemon.config import Config, load_config
from daemon.credentials import TokenSource
from daemon.retry import Policy
from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.replies import Reply, upload_error
from daemon.service import Service
from daemon.store.queue import ItemState, Metadata, NewFile, Queue
from daemon.upload import Endpoints, Uploader, Upstream
from daemon.walljump import JumpDetector
from tests.conftest import ManualClock
from tests.e2e.harness import wait_until
from tests.queued import queue_frames

TOKEN = "clock-jump-token-71c2"
YEARS = timedelta(days=5 * 365)
RETRY_BASE = 100.0  # seconds of manual time: a wait long enough to tell "at once" from "later"


class FailFirstPosts:
    """503 for the first ``n`` upload POSTs (a retriable server error without Retry-After, so
    the wait is the item's own backoff, not an upstream pause)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.posts = 0
        self.lock = threading.Lock()

    def before(self, request: Request) -> Reply | None:
        if request.route != "POST /upload/{session_key}":
            return None
        with self.lock:
            self.posts += 1
            if self.left > 0:
                self.left -= 1
                return upload_error(503, "ServiceUnavailable", "try later", retriable=True)
        return None


def make_config(tmp: Path, sandbox: Sandbox) -> Config:
    card = tmp / "card"
    card.mkdir(exist_ok=True)
    path = tmp / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{card}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 10
[scan]
interval_seconds = 60
[upload]
max_parallel_uploads = 2
retry_base_seconds = {RETRY_BASE}
retry_cap_seconds = {RETRY_BASE}
""",
        encoding="utf-8",
    )
    return load_config(path, env={"MAPILLARY_TOKEN": TOKEN})


@pytest.fixture
def hook() -> FailFirstPosts:
    return FailFirstPosts(1)


@pytest.fixture
def sandbox(tmp_path: Path, hook: FailFirstPosts) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN, faults=hook) as s:
        yield s


def queued_frames(q: Queue, tmp: Path, n: int, clock: ManualClock) -> None:
    """``n`` synthetic frames queued as one processed sequence (as process-and-upload does)."""
    now = clock.now().timestamp()
    assert queue_frames(q, tmp / "frames", n, seed=11, sequence="seq-jump", now=now) == n


def uploader(q: Queue, cfg: Config, clock: ManualClock) -> Uploader:
    m, up = cfg.mapillary, cfg.upload
    return Uploader(
        q,
        Endpoints(m.upload_endpoint, m.graph_endpoint, None, 10.0),
        Upstream(clock, TokenSource(m)),
        clock,
        Policy(up.retry_base_seconds, up.retry_cap_seconds, up.max_retry_after_seconds),
        "test-owner",
        threading.Event(),
        rng=random.Random(5),
    )


def next_attempt(q: Queue) -> float:
    row = q.conn.execute(
        "SELECT next_attempt_at FROM items WHERE state = ? AND attempts = 1", (ItemState.QUEUED,)
    ).fetchone()
    return float(row[0])


# --- the pure detector ----------------------------------------------------------------------


def test_the_detector_reports_jumps_both_ways_and_ignores_drift() -> None:
    d = JumpDetector(threshold=30)
    assert d.check(1000.0, 50.0) is None  # first look: nothing to compare with
    assert d.check(1010.0, 60.0) is None  # both moved 10 s
    assert d.check(1030.0, 70.0) is None  # 10 s more than monotonic: drift, not a jump
    jump = d.check(1030.0 + 5 * 365 * 86400, 71.0)
    assert jump == pytest.approx(5 * 365 * 86400 - 1)
    back = d.check(1000.0, 72.0)
    assert back is not None and back < -5 * 365 * 86400 + 100


# --- retry waits through a real uploader ----------------------------------------------------


@pytest.mark.parametrize("direction", [+1, -1], ids=["forward", "back"])
def test_a_retry_wait_keeps_its_length_across_a_jump(
    tmp_path: Path, sandbox: Sandbox, hook: FailFirstPosts, direction: int
) -> None:
    clock = ManualClock()
    cfg = make_config(tmp_path, sandbox)
    service = Service(cfg, clock)
    q = Queue.open(cfg.state.database)
    queued_frames(q, tmp_path, 1, clock)
    up = uploader(q, cfg, clock)
    try:
        check_wait_across_jump(q, up, service, clock, hook, direction)
    finally:
        up.close()
        q.close()


def check_wait_across_jump(
    q: Queue,
    up: Uploader,
    service: Service,
    clock: ManualClock,
    hook: FailFirstPosts,
    direction: int,
) -> None:
    service.follow_wall_clock(q)  # the service's first look at the clocks
    assert up.step(sequences=False)  # one POST, answered 503: the item waits its backoff
    assert hook.posts == 1
    wait = next_attempt(q) - clock.now().timestamp()
    assert 5 < wait <= RETRY_BASE  # seeded jitter: a wait worth measuring

    clock.wall += direction * YEARS  # the jump: wall time only
    clock.advance(1)
    assert service.follow_wall_clock(q) == pytest.approx(direction * YEARS.total_seconds())
    assert not up.step(sequences=False), "retried at once after the jump: a burst"
    clock.advance(wait - 3)
    assert not up.step(sequences=False), "retried before its wait was over"
    assert hook.posts == 1
    clock.advance(3)
    assert up.step(sequences=False), "not retried once its wait was over: a hang"
    assert hook.posts == 2
    assert q.counts() == {ItemState.UPLOADED: 1}


def test_an_open_batch_keeps_its_quiet_window_across_jumps(tmp_path: Path) -> None:
    clock = ManualClock()
    q = Queue.open(tmp_path / "q.sqlite3")
    detector = JumpDetector()
    detector.check(clock.now().timestamp(), clock.monotonic())
    nf = NewFile("/card", "/card/a.jpg", 1, 1, "a" * 64, "image", "/spool/a.jpg")
    meta = Metadata(capture_time="2026-06-01T09:00:00+00:00", lat=46.0, lon=14.5)
    q.record_file(nf, meta, clock.now().timestamp())

    def follow_and_close() -> list[int]:
        jump = detector.check(clock.now().timestamp(), clock.monotonic())
        if jump is not None:
            q.shift_schedule(jump)
        q.close_quiet_batches(clock.now().timestamp(), 10, [])
        return q.batches_to_cut()

    clock.advance(4)
    clock.wall += YEARS
    assert follow_and_close() == [], "a forward jump closed the batch early"
    clock.wall -= 2 * YEARS
    assert follow_and_close() == []
    clock.advance(5)
    assert follow_and_close() == [], "closed before 10 s of quiet"
    clock.advance(2)
    assert follow_and_close() != [], "never closed: a hang"
    q.close()


def test_the_upstream_pause_is_monotonic() -> None:
    clock = ManualClock()
    upstream = Upstream(clock, TokenSource(load_config(None, env={}).mapillary))
    upstream.pause(30, "rate_limited")
    remaining = upstream.pause_remaining()  # the pause plus this worker's staggered release
    assert remaining >= 30
    clock.wall -= YEARS
    assert upstream.pause_remaining() == pytest.approx(remaining)
    clock.wall += 2 * YEARS
    assert upstream.pause_remaining() == pytest.approx(remaining)
    clock.advance(remaining + 0.1)
    assert upstream.pause_remaining() == 0


# --- the service ----------------------------------------------------------------------------


def run_service(service: Service, stop: threading.Event) -> threading.Thread:
    ready = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), kwargs={"on_ready": ready.set})
    t.start()
    assert ready.wait(15)
    return t


def test_deadlines_set_before_the_clock_went_back_while_down_are_due_at_start_up(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    clock = ManualClock()
    cfg = make_config(tmp_path, sandbox)
    q = Queue.open(cfg.state.database)
    queued_frames(q, tmp_path, 2, clock)
    far = (clock.now() + YEARS).timestamp()  # written by a run whose clock was years ahead
    q.conn.execute("UPDATE items SET next_attempt_at = ?", (far,))
    q.close()

    stop = threading.Event()
    t = run_service(Service(cfg, clock), stop)
    try:
        q = Queue.open(cfg.state.database)
        try:
            limit = clock.now().timestamp() + 3600 * 3
            assert all(r[0] <= limit for r in q.conn.execute("SELECT next_attempt_at FROM items"))
        finally:
            q.close()
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()


def test_a_service_run_with_jumps_both_ways_uploads_everything(
    tmp_path: Path, sandbox: Sandbox, hook: FailFirstPosts
) -> None:
    """Files on the card, the first upload refused (so a retry wait is pending), then the wall
    clock jumps 5 years forward and, later, 10 years back, while manual time runs at ~20x."""
    hook.left = 3
    clock = ManualClock()
    cfg = make_config(tmp_path, sandbox)
    frames = synth.write_drive(tmp_path / "card" / "DCIM", 8, seed=3)
    service = Service(cfg, clock)
    stop = threading.Event()
    ticking = threading.Event()

    def drive() -> None:  # manual time: 0.5 s per 25 ms of real time
        while not ticking.wait(0.025):
            clock.advance(0.5)

    driver = threading.Thread(target=drive)
    driver.start()
    t = run_service(service, stop)
    try:
        wait_until(lambda: hook.posts >= 3, 60, "the refused uploads")
        clock.wall += YEARS
        time.sleep(1.0)
        clock.wall -= 2 * YEARS
        q = Queue.open(cfg.state.database)
        try:
            wait_until(
                lambda: q.counts().get(ItemState.DONE, 0) == len(frames),
                90,
                "every frame done after the jumps",
            )
        finally:
            q.close()
        assert hook.posts == len(frames) + 1 + 3  # each image, the manifest, 3 retries
    finally:
        ticking.set()
        driver.join()
        stop.set()
        t.join(30)
    assert not t.is_alive()
