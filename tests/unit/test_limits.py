"""Upload limits (issue #5 "Limits"): the bandwidth timetable and upload windows
(daemon/limits.py), the token bucket that enforces the rate (daemon/throttle.py), and the
offline state machine (daemon/reachability.py). All pure: times and randomness passed in."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.limits import Timetable, Windows, parse_rate
from daemon.reachability import PROBE_TIMEOUT, Reachability
from daemon.throttle import Bandwidth, TokenBucket, piece_size
from tests.conftest import ManualClock

# 2026-11-16 is a Monday.
MON = datetime(2026, 11, 16, tzinfo=UTC)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return MON.replace(day=16 + day, hour=hh, minute=mm)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("512K", 512 * 1024),
        ("2M", 2 * 1024**2),
        ("1.5M", 1.5 * 1024**2),
        ("100000", 100000),
        ("3G", 3 * 1024**3),
        ("10MiB/s", 10 * 1024**2),
        ("64k", 64 * 1024),
        ("off", None),
    ],
)
def test_rates(text: str, want: float | None) -> None:
    assert parse_rate(text) == want


@pytest.mark.parametrize("bad", ["fast", "5X", "-1M", "0", ""])
def test_bad_rates(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_timetable_holds_each_rate_until_the_next_and_wraps_past_midnight() -> None:
    t = Timetable.parse("07:00,256K 19:00,4M 23:00,off")
    assert t.rate_at(at(0, 6, 59)) is None  # Sunday 23:00's "off" still holds
    assert t.rate_at(at(0, 7, 0)) == 256 * 1024
    assert t.rate_at(at(2, 18, 59)) == 256 * 1024
    assert t.rate_at(at(2, 19, 0)) == 4 * 1024**2
    assert t.rate_at(at(2, 23, 30)) is None


def test_weekday_entries() -> None:
    t = Timetable.parse("Mon-08:00,1M Sat-10:00,off")
    assert t.rate_at(at(0, 7, 0)) is None  # before Monday 08:00: Saturday's entry wraps
    assert t.rate_at(at(0, 8, 0)) == 1024**2
    assert t.rate_at(at(4, 23, 0)) == 1024**2  # Friday night: still Monday's
    assert t.rate_at(at(5, 10, 0)) is None


def test_a_single_rate_and_a_number() -> None:
    assert Timetable.parse("1M").rate_at(at(3, 3)) == 1024**2
    assert Timetable.parse(250_000).rate_at(at(6, 23)) == 250_000


@pytest.mark.parametrize(
    "bad", ["07:00", "25:00,1M", "07:60,1M", "Foo-07:00,1M", "07:00,fast", "   "]
)
def test_bad_timetables(bad: str) -> None:
    with pytest.raises(ValueError):
        Timetable.parse(bad)


def test_windows_cross_midnight_and_take_weekdays() -> None:
    w = Windows.parse(["Mon-Fri 22:00-06:00", "Sat-Sun 00:00-24:00"])
    assert not w.is_open(at(0, 12))
    assert w.is_open(at(0, 22))
    assert w.is_open(at(1, 5, 59))  # Monday's window, Tuesday morning
    assert not w.is_open(at(1, 6))
    assert w.is_open(at(5, 12))  # Saturday all day
    # Monday 03:00: Sunday's all-day window ended at midnight and Monday's night window
    # starts at 22:00 (a window belongs to the day it starts on); Saturday 03:00 is open.
    assert not w.is_open(at(0, 3))
    assert w.is_open(at(5, 3))
    assert Windows.parse(["Sun 22:00-06:00"]).is_open(at(0, 3))


def test_next_change() -> None:
    w = Windows.parse(["22:00-06:00"])
    assert w.next_change(at(0, 12, 30)) == at(0, 22)
    assert w.next_change(at(0, 23, 15)) == at(1, 6)
    assert Windows().next_change(at(0, 1)) is None
    assert Windows().is_open(at(0, 1))


@pytest.mark.parametrize("bad", ["22:00", "Xyz 22:00-06:00", "22:00-06:61", "a b c"])
def test_bad_windows(bad: str) -> None:
    with pytest.raises(ValueError):
        Windows.parse([bad])


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[upload]\nbandwidth_limit = "07:00,fast"\nwindows = ["25:00-01:00"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env={})
    text = str(info.value)
    assert "upload.bandwidth_limit" in text and "'fast'" in text
    assert "upload.windows" in text and "25:00" in text
    cfg.write_text('[upload]\nbandwidth_limit = "2M"\nwindows = ["Sat-Sun 00:00-24:00"]\n')
    up = load_config(cfg, env={}).upload
    assert up.bandwidth_limit is not None and up.bandwidth_limit.rate_at(at(0, 0)) == 2 * 1024**2
    assert up.windows.is_open(at(5, 1)) and not up.windows.is_open(at(0, 12))


def test_token_bucket_keeps_the_average_rate() -> None:
    bucket, rate, now, sent = TokenBucket(), 1000.0, 0.0, 0
    for _ in range(100):
        now += bucket.reserve(250, rate, now)  # wait what it says, then send
        sent += 250
    # 25 000 bytes at 1000 B/s: 25 s, less the initial half-second burst.
    assert now == pytest.approx(sent / rate - 0.5, abs=1e-9)


def test_token_bucket_does_not_save_up_idle_time() -> None:
    bucket = TokenBucket()
    assert bucket.reserve(500, 1000.0, 0.0) == 0.0
    assert bucket.reserve(1000, 1000.0, 3600.0) == pytest.approx(0.5)  # burst is 0.5 s only


def test_pieces_are_small_when_the_rate_is_low() -> None:
    assert piece_size(None, 1 << 20) == 1 << 20
    assert piece_size(64 * 1024, 1 << 20) == 16 * 1024
    assert piece_size(8 * 1024**2, 1 << 20) == 1 << 20


class WaitingClock(ManualClock):
    """The manual clock, advanced by exactly what the limiter asks to wait."""


def test_bandwidth_waits_follow_the_timetable_in_force() -> None:
    clock = WaitingClock(datetime(2026, 11, 16, 6, 59, 50, tzinfo=UTC))
    waited: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            waited.append(timeout)
            clock.advance(timeout)
            return False

    bw = Bandwidth(clock, Timetable.parse("07:00,100K 19:00,off"), zone=UTC, stop=Stop())
    for _ in range(40):  # 40 × 64 KiB, unlimited until 07:00, then 100 KiB/s
        bw.take(64 * 1024)
    assert waited == []  # still before 07:00: "off" from the evening before
    clock.advance(10)
    for _ in range(40):
        bw.take(64 * 1024)
    assert sum(waited) == pytest.approx(40 * 64 / 100 - 0.5, rel=1e-6)


def test_offline_state_probes_once_with_growing_delays() -> None:
    r, rng = Reachability(first_probe=5.0, max_probe=300.0), random.Random(7)
    assert r.wait(0.0) == 0.0 and not r.offline
    assert r.unreachable(10.0, rng) is True  # starts the state: logged once
    assert r.unreachable(10.1, rng) is False  # a second worker's failure: not logged again
    due = r.next_probe
    assert r.wait(due - 1) > 0
    assert r.wait(due) == 0.0  # the probe
    assert r.wait(due) > 0  # everyone else waits for its answer
    assert r.wait(due + PROBE_TIMEOUT) == 0.0  # …unless it never answers
    ceilings = []
    for i in range(12):
        r.unreachable(1000.0 * (i + 1), rng)
        ceilings.append(r.next_probe - 1000.0 * (i + 1))
    assert all(c <= 300.0 for c in ceilings) and max(ceilings) > 20
    assert r.reachable(20000.0) == pytest.approx(20000.0 - 10.0)
    assert r.reachable(20001.0) is None and r.wait(20001.0) == 0.0
