"""BlackVue dashcam GPS: NMEA sentences in the ``gps `` box, camera model in ``cprt``.

A BlackVue MP4 has a top-level ``free`` box whose payload is itself a list of boxes; two of
them matter here:

* ``gps ``: text, one NMEA sentence per line, each prefixed with the camera's clock in
  milliseconds since 1970 in brackets: ``[1623057074211]$GPRMC,202530.00,A,…*hh``. The
  camera clock may run in local time; the UTC offset is the difference between the first
  valid RMC's date and time and its bracket time (rounded to the millisecond), or failing
  an RMC, the first valid GGA/GLL's time of day laid on the camera's date; else 0;
* ``cprt``: a copyright/model string, either JSON (``{"model":"DR900X Plus",…}``) or
  ``;``-separated with the model second (``Pittasoft Co., Ltd.;DR900S-1CH;1.008;…``).

Rules, as mapillary_tools 0.14.7 ``blackvue_parser`` applies them (this module reads the same
format with its own code, no pynmea2): any talker (``GP``, ``GN`` …) is accepted; a sentence
with a checksum that does not match is skipped, one without a checksum accepted; valid means
RMC status ``A`` (and, when those fields are present, a mode indicator in ``ADEFMPRS`` and a
navigational status in ``SCU``), GGA quality 1–5, GLL status ``A``. The points are the valid
RMCs, or if there are none the valid GGAs, or else the valid GLLs; each at its bracket time
plus the offset; their movie time is that minus the first point's (the first point is movie
time 0); ``TimedPoint.epoch_s`` is the corrected UTC time.

Differences on purpose: an RMC point takes the altitude of the GGA written at the same bracket
time (mapillary_tools leaves RMC points without altitude); a ``[ms]`` stamp after the sentence
(some firmwares write one) is removed before the checksum check instead of making the line
unreadable.

There is no licensed real BlackVue file in the test corpus: the tests build files in this
format from its documentation and mapillary_tools' reading of it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from daemon.errors import CorruptMediaError
from daemon.media import mp4
from daemon.media.nmea import checksum

__all__ = [
    "BlackVueGps",
    "BlackVueTelemetry",
    "NmeaFix",
    "blackvue_track",
    "camera_model_from_cprt",
    "find_blackvue_boxes",
    "parse_gps_box",
]

_LINE = re.compile(rb"^\s*\[(\d+)\]\s*(\$\w{5}.*?)\s*(?:\[\d+\])?\s*$")
_DM = re.compile(r"^(\d+)(\d\d\.\d+)$")
_RMC_MODES = frozenset("ADEFMPRS")
_RMC_NAV = frozenset("SCU")
_HALF_DAY = 12 * 3600


@dataclass(frozen=True, slots=True)
class NmeaFix:
    """One valid sentence: its bracket time (camera ms), kind, position and NMEA time.

    ``utc`` is the full date and time for an RMC with a date, ``time_of_day`` the
    ``hhmmss.ss`` time every kind carries (None when empty).
    """

    camera_ms: int
    kind: str
    lat: float
    lon: float
    alt: float | None
    utc: datetime | None
    time_of_day: tuple[int, int, int, int] | None  # hour, minute, second, microsecond


def _coordinate(value: str, hemisphere: str) -> float:
    """``ddmm.mmmm`` with its hemisphere letter; an empty value reads as 0 (as pynmea2 does)."""
    if not value or value == "0":
        magnitude = 0.0
    else:
        match = _DM.match(value)
        if match is None:
            raise ValueError(f"bad coordinate {value!r}")
        magnitude = float(match.group(1)) + float(match.group(2)) / 60
    if hemisphere in ("N", "E"):
        return magnitude
    if hemisphere in ("S", "W"):
        return -magnitude
    return 0.0


def _time_of_day(text: str) -> tuple[int, int, int, int] | None:
    if not text:
        return None
    if len(text) < 6 or not text[:6].isdigit():
        raise ValueError(f"bad time {text!r}")
    fraction = text[6:]
    micro = int(float(fraction) * 1_000_000) if fraction else 0
    hour, minute, second = int(text[0:2]), int(text[2:4]), int(text[4:6])
    if hour > 23 or minute > 59 or second > 59 or not 0 <= micro < 1_000_000:
        raise ValueError(f"bad time {text!r}")
    return hour, minute, second, micro


def _rmc_utc(fields: list[str], tod: tuple[int, int, int, int] | None) -> datetime | None:
    text = fields[8] if len(fields) > 8 else ""
    if tod is None or len(text) != 6 or not text.isdigit():
        return None
    day = datetime.strptime(text, "%d%m%y").replace(tzinfo=UTC)  # %y as pynmea2 reads it
    hour, minute, second, micro = tod
    return day.replace(hour=hour, minute=minute, second=second, microsecond=micro)


def _sentence(camera_ms: int, sentence: str) -> NmeaFix | None:
    """A valid RMC/GGA/GLL fix from one sentence, None for anything else or invalid."""
    body, star, given = sentence[1:].partition("*")
    if star and given[:2].upper() != checksum(body):
        return None
    fields = body.split(",")
    kind = fields[0][2:]
    data = fields[1:]
    if kind == "RMC" and len(data) >= 6:
        valid = data[1] == "A"
        if len(data) > 11:
            valid = valid and data[11] in _RMC_MODES
        if len(data) > 12:
            valid = valid and data[12] in _RMC_NAV
        if not valid:
            return None
        tod = _time_of_day(data[0])
        lat, lon = _coordinate(data[2], data[3]), _coordinate(data[4], data[5])
        return NmeaFix(camera_ms, kind, lat, lon, None, _rmc_utc(data, tod), tod)
    if kind == "GGA" and len(data) >= 6:
        if not data[5].isdigit() or not 1 <= int(data[5]) <= 5:
            return None
        alt = float(data[8]) if len(data) > 8 and data[8] else None
        if alt is not None and not math.isfinite(alt):
            alt = None
        lat, lon = _coordinate(data[1], data[2]), _coordinate(data[3], data[4])
        return NmeaFix(camera_ms, kind, lat, lon, alt, None, _time_of_day(data[0]))
    if kind == "GLL" and len(data) >= 6:
        if data[5] != "A":
            return None
        lat, lon = _coordinate(data[0], data[1]), _coordinate(data[2], data[3])
        return NmeaFix(camera_ms, kind, lat, lon, None, None, _time_of_day(data[4]))
    return None


def _fixes(data: bytes) -> tuple[list[NmeaFix], int]:
    """Valid fixes in line order, and how many NMEA lines could not be read."""
    fixes: list[NmeaFix] = []
    bad = 0
    for raw in data.splitlines():
        match = _LINE.match(raw)
        if match is None:
            continue
        try:
            sentence = match.group(2).decode("ascii")
            fix = _sentence(int(match.group(1)), sentence)
        except (UnicodeDecodeError, ValueError, OverflowError):
            bad += 1
            continue
        if fix is not None:
            fixes.append(fix)
    return fixes, bad


def _offset_from_time_of_day(camera_s: float, tod: tuple[int, int, int, int]) -> float | None:
    try:
        camera = datetime.fromtimestamp(camera_s, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    hour, minute, second, micro = tod
    corrected = camera.replace(hour=hour, minute=minute, second=second, microsecond=micro)
    camera_secs = camera.hour * 3600 + camera.minute * 60 + camera.second
    nmea_secs = hour * 3600 + minute * 60 + second
    if camera_secs - nmea_secs > _HALF_DAY:
        corrected += timedelta(days=1)
    elif nmea_secs - camera_secs > _HALF_DAY:
        corrected -= timedelta(days=1)
    return round(corrected.timestamp() - camera_s, 3)


def _utc_offset(fixes: list[NmeaFix]) -> float | None:
    """Seconds to add to the camera clock: from the first RMC with a date, else the first
    GGA/GLL time of day; None when neither exists."""
    for fix in fixes:
        if fix.kind == "RMC" and fix.utc is not None:
            return round(fix.utc.timestamp() - round(fix.camera_ms / 1000, 3), 3)
    first = next((f for f in fixes if f.kind in ("GGA", "GLL")), None)
    if first is None or first.time_of_day is None:
        return None
    return _offset_from_time_of_day(round(first.camera_ms / 1000, 3), first.time_of_day)


@dataclass(frozen=True)
class BlackVueGps:
    """What a ``gps `` box holds: movie-time points (UTC ``epoch_s`` set), the clock that
    corrected them (``gps`` when an NMEA time fixed the camera clock, else ``camera``)."""

    points: list[mp4.TimedPoint]
    clock: mp4.Clock
    notes: list[str]


def parse_gps_box(data: bytes, name: str = "BlackVue gps box") -> BlackVueGps:
    """The points of a ``gps `` box payload (pure): movie-time points with corrected UTC
    ``epoch_s``, the clock they were corrected by (``gps`` or ``camera``), and notes."""
    fixes, bad = _fixes(data)
    notes = [f"{bad} NMEA line(s) that could not be read skipped"] if bad else []
    offset = _utc_offset(fixes)
    clock: mp4.Clock = "gps" if offset is not None else "camera"
    if offset is None:
        offset = 0.0
        if fixes:
            notes.append("no NMEA time: the camera clock is taken as UTC")
    by_kind: dict[str, list[NmeaFix]] = {}
    for fix in fixes:
        by_kind.setdefault(fix.kind, []).append(fix)
    chosen = next((by_kind[k] for k in ("RMC", "GGA", "GLL") if k in by_kind), [])
    altitudes = {f.camera_ms: f.alt for f in by_kind.get("GGA", ()) if f.alt is not None}
    timed = sorted(
        ((round(round(f.camera_ms / 1000, 3) + offset, 3), f) for f in chosen),
        key=lambda pair: pair[0],
    )
    if not timed:
        return BlackVueGps([], clock, notes)
    first = timed[0][0]
    points = [
        mp4.TimedPoint(
            epoch - first,
            f.lat,
            f.lon,
            f.alt if f.alt is not None else altitudes.get(f.camera_ms),
            epoch,
        )
        for epoch, f in timed
    ]
    return BlackVueGps(points, clock, notes)


def camera_model_from_cprt(data: bytes) -> str:
    """The model in a ``cprt`` payload (JSON ``model``, or the second ``;`` field); "" if none.

    >>> camera_model_from_cprt(b' {"model":"DR900X Plus","ver":0.918}')
    'DR900X Plus'
    >>> camera_model_from_cprt(b' Pittasoft Co., Ltd.;DR900S-1CH;1.008;English;1;')
    'DR900S-1CH'
    """
    try:
        text = data.strip().strip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return ""
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        return str(parsed.get("model", "")).strip()
    fields = text.split(";")
    return fields[1].strip() if len(fields) >= 2 else ""


def find_blackvue_boxes(
    fileobj: BinaryIO, name: str, info: mp4.Mp4Info
) -> tuple[mp4.Box | None, mp4.Box | None]:
    """The first ``gps `` and the first ``cprt`` box inside the top-level ``free`` boxes.

    A ``free`` box may hold anything (it is padding in most files), so one whose payload is
    not a list of boxes is simply not BlackVue's. (mapillary_tools looks for ``cprt`` from
    where it stopped reading ``gps ``, so it finds the model only in a later ``free`` box.)
    """
    gps = cprt = None
    for free in info.top_level:
        if free.type != b"free":
            continue
        try:
            for child in mp4.child_boxes(fileobj, name, free):
                if child.type == b"gps " and gps is None:
                    gps = child
                elif child.type == b"cprt" and cprt is None:
                    cprt = child
        except CorruptMediaError as exc:
            if exc.reason == mp4.TRUNCATED:
                raise
            continue
    return gps, cprt


@dataclass(frozen=True)
class BlackVueTelemetry:
    """The GPS of a BlackVue video; ``timed`` None when the ``gps `` box has no valid fix."""

    timed: mp4.TimedTrack | None
    make: str
    model: str
    notes: tuple[str, ...]

    @property
    def points(self) -> tuple[mp4.TimedPoint, ...]:
        """The points (empty when there are none)."""
        return self.timed.points if self.timed is not None else ()


def blackvue_track(
    fileobj: BinaryIO, name: str, *, info: mp4.Mp4Info | None = None
) -> BlackVueTelemetry | None:
    """The GPS of a BlackVue MP4, or None when the file has no BlackVue ``gps `` box.

    Raises only ItemError subclasses (``truncated_mp4`` for a cut file).
    """
    info = info or mp4.probe(fileobj, name)
    gps_box, cprt_box = find_blackvue_boxes(fileobj, name, info)
    if gps_box is None:
        return None
    parsed = parse_gps_box(mp4.read_payload(fileobj, name, gps_box), name)
    model = ""
    if cprt_box is not None and cprt_box.data_size <= 4096:
        model = camera_model_from_cprt(mp4.read_payload(fileobj, name, cprt_box))
    notes = list(parsed.notes)
    if not parsed.points:
        notes.append("the BlackVue gps box holds no valid RMC/GGA/GLL fix")
        return BlackVueTelemetry(None, "BlackVue", model, tuple(notes))
    timed = mp4.timed_track(
        parsed.points,
        name,
        movie_creation=info.movie.creation_time if info.movie else None,
        epoch_clock=parsed.clock,
        notes=notes,
    )
    return BlackVueTelemetry(timed, "BlackVue", model, tuple(notes))
