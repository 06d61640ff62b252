"""Read an NMEA 0183 log into a :class:`~daemon.geo.track.Track` (own parser, no pynmea2).

Sentences used:

* ``$--RMC``: time, status, position, speed, course and **date**;
* ``$--GGA``: time, fix quality, position and altitude (metres above mean sea level).

``--`` is the talker: GP (GPS), GN (combined GNSS, what most modern receivers and dashcams
write), GL (GLONASS), GA (Galileo), GB/BD (BeiDou), GI (NavIC), GQ/QZ (QZSS) are all accepted.
mapillary_tools 0.14.7 only reads ``GPRMC`` and ``$GPGGA``, so a ``$GN…`` log gives it no
points at all. Other sentences (GSV, VTG, proprietary ``$P…``) are ignored.

Rules:

* **Checksums** (``*hh``) are verified; a line whose checksum does not match is skipped and
  counted. A line without a checksum is accepted only if it has every field up to the one
  needed (a truncated last line fails that), and is counted too.
* **Invalid fixes are skipped**: RMC status ``V`` or mode indicator ``N``, GGA quality 0 or
  empty, empty position fields.
* **Dates**: GGA has none. Each GGA takes the date of the nearest preceding RMC in the file
  (or the following one, for GGAs before the first RMC), moved a day forward when its time of
  day is more than 12 h *earlier* than that RMC's (it is past midnight) and a day back when
  more than 12 h later. RMCs carry their own date, so a midnight rollover is handled on both.
  A log with fixes but no valid RMC has no date and is refused.
* RMC and GGA of the same instant are merged into one point (GGA's altitude, RMC's course).
  The course is used as the point's heading only when the reported speed is at least 1 knot:
  a stationary receiver's course is noise.
* **Segments**: a pause of more than :data:`GAP_S` (30 s) between consecutive fixes starts a
  new segment, so nothing is interpolated across a stretch where the receiver had no fix or
  was off (typical loggers write one fix per second; dashcams stop when parked).

Every problem that makes the file unusable is ``ItemError(reason="bad_nmea")`` naming the file;
skipped lines are counted in :attr:`Track.notes`. No other exception leaves :func:`read_nmea`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce
from operator import xor
from pathlib import Path

from daemon.errors import ItemError
from daemon.geo.track import Track, TrackPoint

__all__ = [
    "GAP_S",
    "TALKERS",
    "checksum",
    "gga_sentence",
    "parse_nmea",
    "read_nmea",
    "rmc_sentence",
]

#: A pause between fixes longer than this (seconds) starts a new track segment.
GAP_S = 30.0
#: Talker ids accepted for RMC and GGA.
TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GI", "GQ", "QZ"})
_MIN_FIELDS = {"RMC": 10, "GGA": 10}  # through the date (RMC) / the altitude (GGA)
_HALF_DAY = 43_200.0
_GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)


def checksum(body: str) -> str:
    """The two-hex-digit XOR checksum of the text between ``$`` and ``*``."""
    return f"{reduce(xor, body.encode('ascii', 'replace'), 0):02X}"


def _sentence(body: str) -> str:
    return f"${body}*{checksum(body)}"


def _tod(t: datetime) -> str:
    t = t.astimezone(UTC)
    return t.strftime("%H%M%S") + f".{t.microsecond // 1000:03d}"


def _angle(value: float, width: int, hemispheres: str) -> str:
    degrees = int(abs(value))
    minutes = (abs(value) - degrees) * 60.0
    text = f"{degrees:0{width}d}{minutes:010.7f}"
    return f"{text},{hemispheres[0] if value >= 0 else hemispheres[1]}"


def rmc_sentence(
    when: datetime,
    lat: float,
    lon: float,
    *,
    speed_knots: float | None = None,
    course: float | None = None,
    valid: bool = True,
    talker: str = "GP",
) -> str:
    """A ``$--RMC`` sentence with its checksum (for tests, demos and simulated loggers)."""
    fields = [
        f"{talker}RMC",
        _tod(when),
        "A" if valid else "V",
        _angle(lat, 2, "NS"),
        _angle(lon, 3, "EW"),
        "" if speed_knots is None else f"{speed_knots:.2f}",
        "" if course is None else f"{course:.2f}",
        when.astimezone(UTC).strftime("%d%m%y"),
        "",
        "",
        "A" if valid else "N",
    ]
    return _sentence(",".join(fields))


def gga_sentence(
    when: datetime,
    lat: float,
    lon: float,
    alt: float | None,
    *,
    quality: int = 1,
    talker: str = "GP",
) -> str:
    """A ``$--GGA`` sentence with its checksum."""
    fields = [
        f"{talker}GGA",
        _tod(when),
        _angle(lat, 2, "NS"),
        _angle(lon, 3, "EW"),
        str(quality),
        "08",
        "0.9",
        "" if alt is None else f"{alt:.1f}",
        "M",
        "46.9",
        "M",
        "",
        "",
    ]
    return _sentence(",".join(fields))


class _Skip(Exception):
    """A sentence that is not used; ``args[0]`` is the count key."""


@dataclass
class _Fix:
    line: int
    kind: str
    tod: float  # seconds since midnight UTC
    day: date | None
    lat: float
    lon: float
    alt: float | None
    course: float | None


def _parse_tod(text: str) -> float:
    if len(text) < 6 or not text[:6].isdigit():
        raise ValueError(f"bad time {text!r}")
    hours, minutes, seconds = int(text[0:2]), int(text[2:4]), float(text[4:])
    if hours > 23 or minutes > 59 or not 0 <= seconds < 61:
        raise ValueError(f"bad time {text!r}")
    return hours * 3600 + minutes * 60 + min(seconds, 59.999999)


def _parse_date(text: str) -> date:
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"bad date {text!r}")
    yy = int(text[4:6])
    return date(1900 + yy if yy >= 80 else 2000 + yy, int(text[2:4]), int(text[0:2]))


def _parse_coordinate(value: str, hemisphere: str, degree_digits: int, limit: float) -> float:
    if not value or not hemisphere:
        raise _Skip("without a position")
    if len(value.split(".")[0]) != degree_digits + 2:
        raise ValueError(f"bad coordinate {value!r}")
    degrees = float(value[:degree_digits])
    minutes = float(value[degree_digits:])
    if minutes >= 60:
        raise ValueError(f"bad coordinate {value!r}")
    result = degrees + minutes / 60.0
    if hemisphere in ("S", "W"):
        result = -result
    elif hemisphere not in ("N", "E"):
        raise ValueError(f"bad hemisphere {hemisphere!r}")
    if not -limit <= result <= limit:
        raise ValueError(f"coordinate {result} out of range")
    return result


def _float_or_none(text: str) -> float | None:
    if not text:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parse_fields(kind: str, fields: list[str], line: int) -> _Fix:
    if kind == "RMC":
        if fields[2] != "A" or (len(fields) > 12 and fields[12][:1] == "N"):
            raise _Skip("invalid fixes (RMC status V)")
        lat = _parse_coordinate(fields[3], fields[4], 2, 90.0)
        lon = _parse_coordinate(fields[5], fields[6], 3, 180.0)
        speed = _float_or_none(fields[7])
        course = _float_or_none(fields[8])
        if course is not None and (speed is None or speed < 1.0):
            course = None
        return _Fix(
            line, kind, _parse_tod(fields[1]), _parse_date(fields[9]), lat, lon, None, course
        )
    if fields[6] in ("", "0"):
        raise _Skip("invalid fixes (GGA quality 0)")
    lat = _parse_coordinate(fields[2], fields[3], 2, 90.0)
    lon = _parse_coordinate(fields[4], fields[5], 3, 180.0)
    alt = _float_or_none(fields[9])
    return _Fix(line, kind, _parse_tod(fields[1]), None, lat, lon, alt, None)


def _read_fixes(text: str) -> tuple[list[_Fix], Counter[str], int]:
    fixes: list[_Fix] = []
    counts: Counter[str] = Counter()
    sentences = 0
    malformed: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        start = raw.find("$")
        if start < 0:
            continue
        line = raw[start + 1 :].strip()
        sentences += 1
        body, star, given = line.partition("*")
        if star and given[:2].upper() != checksum(body):
            counts["with a bad checksum"] += 1
            continue
        fields = body.split(",")
        address = fields[0]
        kind = address[2:]
        if len(address) != 5 or kind not in _MIN_FIELDS:
            continue
        if address[:2] not in TALKERS:
            counts[f"from an unknown talker ({address[:2]})"] += 1
            continue
        if len(fields) < _MIN_FIELDS[kind]:
            counts["truncated"] += 1
            continue
        if not star:
            counts["without a checksum (accepted)"] += 1
        try:
            fixes.append(_parse_fields(kind, fields, number))
        except _Skip as skip:
            counts[str(skip.args[0])] += 1
        except ValueError as exc:
            counts["malformed"] += 1
            if len(malformed) < 3:
                malformed.append(f"line {number}: {exc}")
    if malformed:
        counts[f"malformed (e.g. {'; '.join(malformed)})"] = counts.pop("malformed")
    return fixes, counts, sentences


def _dated(fixes: list[_Fix], name: str) -> list[tuple[datetime, _Fix]]:
    anchors = [i for i, f in enumerate(fixes) if f.day is not None]
    if not anchors:
        raise ItemError(
            f"{name}: {len(fixes)} valid fix(es) but no valid $--RMC sentence, so no date: "
            "the fixes cannot be placed in time",
            reason="bad_nmea",
        )
    out: list[tuple[datetime, _Fix]] = []
    a = 0  # index into anchors of the nearest preceding anchor (or the first one)
    for i, fix in enumerate(fixes):
        while a + 1 < len(anchors) and anchors[a + 1] <= i:
            a += 1
        anchor = fixes[anchors[a]]
        assert anchor.day is not None
        day = fix.day or anchor.day
        if fix.day is None:
            if fix.tod < anchor.tod - _HALF_DAY:
                day += timedelta(days=1)
            elif fix.tod > anchor.tod + _HALF_DAY:
                day -= timedelta(days=1)
        when = datetime.combine(day, time(), tzinfo=UTC) + timedelta(seconds=fix.tod)
        out.append((when, fix))
    return out


def parse_nmea(text: str, name: str) -> Track:
    """The track in NMEA ``text``; ``name`` is used in messages and as the track's source."""
    fixes, counts, sentences = _read_fixes(text)
    if sentences == 0:
        raise ItemError(f"{name}: no NMEA sentences (lines with $)", reason="bad_nmea")
    skipped = ", ".join(f"{n} {why}" for why, n in counts.items())
    if not fixes:
        raise ItemError(
            f"{name}: no valid $--RMC/$--GGA fix among {sentences} sentence(s)"
            + (f" ({skipped})" if skipped else ""),
            reason="bad_nmea",
        )
    merged: dict[datetime, TrackPoint] = {}
    early = 0
    for when, fix in sorted(_dated(fixes, name), key=lambda wf: (wf[0], wf[1].kind != "GGA")):
        if when < _GPS_EPOCH:
            early += 1
            continue
        previous = merged.get(when)
        if previous is None:
            merged[when] = TrackPoint(when, fix.lat, fix.lon, fix.alt, fix.course)
        else:  # same instant from another sentence: fill in what is missing
            merged[when] = TrackPoint(
                when,
                previous.lat,
                previous.lon,
                previous.alt if previous.alt is not None else fix.alt,
                previous.heading if previous.heading is not None else fix.course,
            )
    if early:
        counts["dated before 1980-01-06 (the GPS epoch)"] += early
    if not merged:
        raise ItemError(f"{name}: every fix is dated before the GPS epoch", reason="bad_nmea")
    segments: list[list[TrackPoint]] = []
    for point in merged.values():
        if segments and (point.time - segments[-1][-1].time).total_seconds() <= GAP_S:
            segments[-1].append(point)
        else:
            segments.append([point])
    notes = [f"{n} sentence(s) {why} skipped" for why, n in counts.items() if "accepted" not in why]
    notes += [f"{n} sentence(s) {why}" for why, n in counts.items() if "accepted" in why]
    if len(segments) > 1:
        notes.append(f"{len(segments) - 1} pause(s) longer than {GAP_S:.0f} s split the track")
    return Track.from_segments(segments, name, notes)


def read_nmea(path: Path) -> Track:
    """The track in the NMEA log at ``path``; ``ItemError(reason="bad_nmea")`` if unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ItemError(f"{path}: cannot read: {exc.strerror or exc}", reason="bad_nmea") from exc
    return parse_nmea(data.decode("ascii", errors="replace"), str(path))
