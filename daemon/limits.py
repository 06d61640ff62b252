"""Upload limits by time of day: a bandwidth timetable and upload windows. Pure.

**Bandwidth** (``[upload] bandwidth_limit``), in the spirit of rclone's ``--bwlimit``:

* a number: bytes per second, all day;
* a string: one rate (``"512K"``, ``"2.5M"``, ``"off"``) or a timetable of space-separated
  ``HH:MM,RATE`` entries, each optionally prefixed by a weekday (``Mon-08:00,512K``). An entry
  holds from its time until the next one; the last entry wraps round to the first (the
  previous evening's rate holds after midnight). Entries without a weekday apply every day.

Rates take the suffixes ``B``, ``K``, ``M``, ``G`` (powers of 1024, bytes per second); a bare
number is bytes per second; ``off`` means unlimited.

**Windows** (``[upload] windows``): uploads run only inside one of the windows, each
``"HH:MM-HH:MM"`` with an optional weekday or weekday range in front (``"Mon-Fri 22:00-06:00"``,
``"Sat 00:00-24:00"``). A window may cross midnight; it then belongs to the day it starts on.
No windows: always open.

Times are the machine's local wall clock (``now`` is passed in, aware or naive local time).
Every parse error is a :class:`ValueError` whose message names the offending part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WEEK_MINUTES = 7 * 24 * 60
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_RATE = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*([bkmg]?)(?:i?b)?(?:/s)?")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def parse_rate(text: str) -> float | None:
    """Bytes per second for ``text`` (``"512K"`` → 524288.0); None for ``off``/``unlimited``."""
    t = text.strip()
    if t.lower() in ("off", "unlimited", "none"):
        return None
    m = _RATE.fullmatch(t)
    if m is None:
        raise ValueError(f"{text!r} is not a rate (e.g. 512K, 2M, 100000 or off)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"{text!r}: a rate must be above 0 (use windows to stop uploads)")
    return value


def _minutes(text: str, *, allow_24: bool = False) -> int:
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    return hours * 60 + minutes


def _day(text: str) -> int:
    key = text.strip().lower()
    for index, name in enumerate(DAY_NAMES):
        if key in (name[:3], name):
            return index
    raise ValueError(f"{text!r} is not a weekday (Mon … Sun)")


def _week_minute(now: datetime) -> int:
    return now.weekday() * 24 * 60 + now.hour * 60 + now.minute


@dataclass(frozen=True)
class Timetable:
    """Rates by minute of the week: ``(minute, rate)`` sorted by minute; rate None = unlimited."""

    entries: tuple[tuple[int, float | None], ...]

    @classmethod
    def parse(cls, value: int | float | str) -> Timetable:
        if isinstance(value, bool):
            raise ValueError("expected a rate or a timetable, got a boolean")
        if isinstance(value, int | float):
            if value <= 0:
                raise ValueError(f"{value}: a rate must be above 0")
            return cls(((0, float(value)),))
        parts = value.split()
        if not parts:
            raise ValueError("empty: give a rate, a timetable or leave the key out")
        if len(parts) == 1 and "," not in parts[0]:
            return cls(((0, parse_rate(parts[0])),))
        entries: dict[int, float | None] = {}
        for part in parts:
            when, sep, rate_text = part.partition(",")
            if not sep:
                raise ValueError(f"{part!r}: expected HH:MM,RATE or Day-HH:MM,RATE")
            rate = parse_rate(rate_text)
            day_text, dash, clock = when.rpartition("-")
            minute = _minutes(clock if dash else when)
            days = [_day(day_text)] if dash else range(7)
            for d in days:
                entries[d * 24 * 60 + minute] = rate
        return cls(tuple(sorted(entries.items())))

    def rate_at(self, now: datetime) -> float | None:
        """The rate in force at local time ``now`` (bytes/s; None = unlimited)."""
        minute = _week_minute(now)
        current = self.entries[-1][1]  # wraps round from the end of the week
        for start, rate in self.entries:
            if start > minute:
                break
            current = rate
        return current


@dataclass(frozen=True)
class Window:
    """Open from ``start`` for ``length`` minutes on each of ``days`` (0 = Monday)."""

    days: frozenset[int]
    start: int
    length: int

    @classmethod
    def parse(cls, text: str) -> Window:
        parts = text.split()
        if len(parts) not in (1, 2):
            raise ValueError(f"{text!r}: expected [Day[-Day] ]HH:MM-HH:MM")
        days: frozenset[int] = frozenset(range(7))
        if len(parts) == 2:
            first, _, last = parts[0].partition("-")
            a, b = _day(first), _day(last or first)
            days = frozenset((a + i) % 7 for i in range((b - a) % 7 + 1))
        begin, sep, end = parts[-1].partition("-")
        if not sep:
            raise ValueError(f"{text!r}: expected HH:MM-HH:MM")
        start, stop = _minutes(begin), _minutes(end, allow_24=True)
        length = (stop - start) % (24 * 60) or 24 * 60
        return cls(days, start, length)

    def contains(self, minute_of_week: int) -> bool:
        for day in self.days:
            offset = (minute_of_week - (day * 24 * 60 + self.start)) % WEEK_MINUTES
            if offset < self.length:
                return True
        return False


@dataclass(frozen=True)
class Windows:
    """A set of upload windows; empty = always open."""

    windows: tuple[Window, ...] = ()
    texts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, texts: list[str] | tuple[str, ...]) -> Windows:
        return cls(tuple(Window.parse(t) for t in texts), tuple(texts))

    def is_open(self, now: datetime) -> bool:
        if not self.windows:
            return True
        minute = _week_minute(now)
        return any(w.contains(minute) for w in self.windows)

    def next_change(self, now: datetime) -> datetime | None:
        """When :meth:`is_open` next changes from its value at ``now`` (to the minute), or
        None when it never does."""
        if not self.windows:
            return None
        state = self.is_open(now)
        base = now.replace(second=0, microsecond=0)
        for step in range(1, WEEK_MINUTES + 1):
            t = base + timedelta(minutes=step)
            if self.is_open(t) != state:
                return t
        return None

    def describe(self) -> str:
        return ", ".join(self.texts) if self.texts else "always"
