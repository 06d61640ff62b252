"""When the daemon runs the backup: APScheduler 3.x's cron trigger, driven by an injected clock.

The cron arithmetic (time zones, DST, day-of-week rules) is APScheduler's ``CronTrigger``. The
firing decision is :func:`plan`, pure, with APScheduler's job semantics made explicit:

* **coalesce**: however many fire times were missed, one run;
* **misfire grace**: a missed fire time still runs if the daemon notices it within
  ``grace`` (a Pi that was off at 02:00 runs once when it wakes); an older one is skipped;
* **never before the clock is synced**: while ``clock_synced()`` is false nothing is decided,
  so a Pi without a real-time clock does not fire for the bogus time it booted with, and after
  the jump to the real time the missed runs coalesce into one.

APScheduler's own schedulers read ``datetime.now()`` (when looking for due jobs and again when
checking the misfire grace), so they cannot run on an injected clock; :class:`BackupScheduler`
is a small driver thread instead that re-evaluates :func:`plan` every ``poll_seconds`` of
monotonic time (a wall-clock jump is noticed within one poll). The last fire time handled is
kept in the archive index, so a restart knows what it missed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

import structlog
from apscheduler.triggers.cron import CronTrigger

from daemon.clock import Clock

log = structlog.get_logger(__name__)

LAST_FIRE_KEY = "scheduler.last_fire"
MAX_MISSED = 100_000
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


def cron_trigger(expression: str, zone: tzinfo) -> CronTrigger:
    """``expression`` (5 fields) in ``zone``; ValueError if it is not a cron expression."""
    return CronTrigger.from_crontab(expression, timezone=zone)


def next_fire(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``."""
    result: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return result


@dataclass(frozen=True)
class Plan:
    """``run``: fire now for the scheduled time ``fire`` (None: nothing due). ``handled``: the
    fire time to record as dealt with (run or skipped as too old). ``next_run``: the next one."""

    run: bool
    fire: datetime | None
    handled: datetime | None
    next_run: datetime | None
    skipped: int = 0


def plan(trigger: CronTrigger, last_fire: datetime | None, now: datetime, grace: timedelta) -> Plan:
    """What to do at ``now`` given the last fire time handled (None: never ran; nothing is
    due until the first fire time after ``now``)."""
    if last_fire is None:
        return Plan(False, None, now, next_fire(trigger, now))
    due: datetime | None = None
    count = 0
    f = next_fire(trigger, last_fire)
    while f is not None and f <= now and count < MAX_MISSED:
        due, count = f, count + 1
        f = next_fire(trigger, f)
    if due is None:
        return Plan(False, None, None, f)
    if now - due <= grace:
        return Plan(True, due, due, f, skipped=count - 1)
    return Plan(False, None, due, f, skipped=count)


def system_clock_synced() -> bool:
    """True when the kernel says the clock is synchronised (NTP via adjtimex), or systemd's
    timesyncd marked it so."""
    if os.path.exists("/run/systemd/timesync/synchronized"):
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return True
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return True
    return bool(state != _TIME_ERROR and state >= 0)


class BackupScheduler:
    """Runs ``job`` per :func:`plan`; :meth:`tick` is one evaluation (tests call it directly).

    ``load_last``/``save_last`` persist the last fire time handled. ``retry_after``: a run
    that failed for a reason other than the token is retried after this many seconds (disk
    full: the run resumes once there is room), without waiting for the next fire time.
    """

    def __init__(
        self,
        trigger: CronTrigger,
        *,
        clock: Clock,
        job: Callable[[], tuple[str, str | None]],
        load_last: Callable[[], datetime | None],
        save_last: Callable[[datetime], None],
        grace: timedelta,
        clock_synced: Callable[[], bool] = system_clock_synced,
        retry_after: float = 600.0,
        poll_seconds: float = 30.0,
    ) -> None:
        self.trigger = trigger
        self.clock = clock
        self.job = job
        self.load_last = load_last
        self.save_last = save_last
        self.grace = grace
        self.clock_synced = clock_synced
        self.retry_after = retry_after
        self.poll_seconds = poll_seconds
        self.runs = 0
        self.next_run: datetime | None = None
        self._retry_at: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def tick(self) -> bool:
        """Evaluate once at ``clock.now()``; run the job if due. Returns whether it ran."""
        if not self.clock_synced():
            return False
        now = self.clock.now()
        p = plan(self.trigger, self.load_last(), now, self.grace)
        self.next_run = p.next_run
        if p.handled is not None:
            self.save_last(p.handled)
        if p.skipped:
            log.warning(
                "backup_runs_missed", count=p.skipped, grace_hours=self.grace / timedelta(hours=1)
            )
        retry_due = self._retry_at is not None and self.clock.monotonic() >= self._retry_at
        if not (p.run or retry_due):
            return False
        self._retry_at = None
        log.info("backup_starting", scheduled_for=p.fire.isoformat() if p.fire else "retry")
        self.runs += 1
        result, reason = self.job()
        if result == "failed" and not (reason or "").startswith("token rejected"):
            self._retry_at = self.clock.monotonic() + self.retry_after
        return True

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`shutdown`."""
        self._thread = threading.Thread(target=self._loop, name="backup-scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("backup_scheduler_failed")
            self._stop.wait(self.poll_seconds)

    def shutdown(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
