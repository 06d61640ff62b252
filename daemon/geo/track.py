"""GPS tracks and where a moment lies on them (pure).

A :class:`Track` is what :mod:`daemon.media.gpx` and :mod:`daemon.media.nmea` read: timed
points grouped into *segments* (a GPX ``<trkseg>``, or a stretch of an NMEA log without a
recording gap). :func:`locate` finds the position at a capture time; :func:`apply_offsets`
shifts camera times the way mapillary_tools' ``--interpolation_use_gpx_start_time`` and
``--interpolation_offset_time`` do.

Interpolation follows mapillary_tools 0.14.7 (``geo.interpolate`` as used by
``GeotagImagesFromGPX``) wherever it is right:

* the two neighbouring points are the last point before ``t`` and the first point at or after
  it (``bisect_left``); at the very first point of a segment, that point and the next;
* latitude, longitude and altitude are linear in time between them (altitude only when both
  points have one); two points with the same time give the first of them;
* the heading is the initial bearing from the first neighbour to the second, which is what
  mapillary_tools computes for every GPX or NMEA fix (its track points never carry an angle).

Where mapillary_tools is wrong, this module deliberately differs:

* **Segments are respected** (mapillary_tools #129): mapillary_tools merges every track and
  segment into one list and interpolates straight across the gap between them, so an image
  taken while the logger was off lands on a line between where it stopped and where it
  started again. Here a time inside a gap snaps to the nearer segment end when it is within
  ``tolerance_s`` of it, and is otherwise :class:`OutsideTrack` with the code
  ``"in_track_gap"``. For the same reason the heading at the first point of a segment is the
  bearing to that segment's second point, not the bearing from the previous segment's end.
* **Headings the points carry** (an NMEA RMC course) are interpolated along the shorter arc
  (350° and 10° give 0° halfway, not 180°). mapillary_tools ignores them.
* **No heading from coincident points**: two neighbours at the same position have no bearing,
  so the heading is ``None`` (the sequence stage then takes the bearing to the next image);
  mapillary_tools reports 0° (north) there.
* **Longitude wraps at the antimeridian** (179.9° and −179.9° meet at 180°, not at 0°).
* **Tolerance at the track ends snaps instead of extrapolating**: mapillary_tools accepts a
  time up to 1 ms outside the track and extrapolates along the end pair; here the end point
  itself is used. The two differ by at most ``tolerance_s`` × speed (3 cm at 100 km/h).

All times are timezone-aware; they are compared and stored in UTC. Naive datetimes are refused
(``ValueError``): the zone of a camera's clock is decided where the EXIF is read, not here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import pairwise
from typing import Literal

from daemon.errors import ItemError
from daemon.geo.distance import bearing_deg

__all__ = [
    "OutsideTrack",
    "Track",
    "TrackFix",
    "TrackPoint",
    "apply_offsets",
    "format_time",
    "locate",
]

#: mapillary_tools' tolerance at the track ends (``0.001 < delta`` raises).
DEFAULT_TOLERANCE_S = 0.001


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """``2025-03-14T07:00:00.123Z``: UTC, milliseconds, as every message here shows a time."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _duration(seconds: float) -> str:
    """``3.250 s``, ``2 min 5.0 s``, ``1 h 0 min 37.0 s``."""
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 60:
        return f"{sign}{s:.3f} s"
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{int(hours)} h {int(minutes)} min {secs:.1f} s"
    return f"{sign}{int(minutes)} min {secs:.1f} s"


def _wrap(angle: float) -> float:
    """``angle`` in [0, 360): ``-1e-17 % 360.0`` is 360.0 in floating point, made 0.0 here."""
    wrapped = angle % 360.0
    return 0.0 if wrapped >= 360.0 else wrapped


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One timed fix. ``time`` is aware (stored in UTC); ``heading`` in degrees [0, 360)."""

    time: datetime
    lat: float
    lon: float
    alt: float | None = None
    heading: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", _utc(self.time, "TrackPoint.time"))
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise ValueError(f"latitude {self.lat} is not in [-90, 90]")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise ValueError(f"longitude {self.lon} is not in [-180, 180]")
        if self.alt is not None and not math.isfinite(self.alt):
            raise ValueError(f"altitude {self.alt} is not finite")
        if self.heading is not None:
            if not math.isfinite(self.heading):
                raise ValueError(f"heading {self.heading} is not finite")
            object.__setattr__(self, "heading", _wrap(self.heading))


@dataclass(frozen=True)
class Track:
    """Timed points in segments; never interpolated across the gap between two segments.

    Invariants (checked on construction, ``ValueError`` otherwise): at least one segment, no
    empty segment, points in each segment in non-decreasing time order, segments ordered by
    their first time. Segments may overlap in time (two tracks recorded at once); see
    :func:`locate`. Use :meth:`from_segments` to build one from unsorted points.

    ``source`` names where the points came from (a file path) for messages; ``notes`` are
    human-readable remarks from the reader about what it dropped (points without time, bad
    checksums …), for the log and the status page.
    """

    segments: tuple[tuple[TrackPoint, ...], ...]
    source: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.segments:
            raise ValueError(f"{self.source}: a track needs at least one point")
        previous_start: datetime | None = None
        for number, segment in enumerate(self.segments):
            if not segment:
                raise ValueError(f"{self.source}: segment {number} is empty")
            for a, b in pairwise(segment):
                if b.time < a.time:
                    raise ValueError(f"{self.source}: segment {number} is not sorted by time")
            if previous_start is not None and segment[0].time < previous_start:
                raise ValueError(f"{self.source}: segments are not ordered by start time")
            previous_start = segment[0].time

    @classmethod
    def from_segments(
        cls,
        segments: Iterable[Iterable[TrackPoint]],
        source: str,
        notes: Iterable[str] = (),
    ) -> Track:
        """Sort each segment's points by time (stable), drop empty segments, order segments."""
        kept = [tuple(sorted(s, key=lambda p: p.time)) for s in segments]
        kept = [s for s in kept if s]
        kept.sort(key=lambda s: s[0].time)
        return cls(tuple(kept), source, tuple(notes))

    @property
    def start(self) -> datetime:
        """Time of the earliest point."""
        return self.segments[0][0].time

    @cached_property
    def end(self) -> datetime:
        """Time of the latest point (segments may overlap, so not simply the last one)."""
        return max(s[-1].time for s in self.segments)

    @property
    def point_count(self) -> int:
        """Number of points over all segments."""
        return sum(len(s) for s in self.segments)

    def points(self) -> Iterable[TrackPoint]:
        """Every point, segment by segment."""
        for segment in self.segments:
            yield from segment

    @cached_property
    def _starts(self) -> list[datetime]:
        return [s[0].time for s in self.segments]

    @cached_property
    def _max_end(self) -> list[datetime]:
        """``_max_end[i]``: the latest end among segments ``0..i`` (for overlap lookups)."""
        out: list[datetime] = []
        for segment in self.segments:
            end = segment[-1].time
            out.append(end if not out or end > out[-1] else out[-1])
        return out

    @cached_property
    def _times(self) -> list[list[datetime]]:
        return [[p.time for p in s] for s in self.segments]


@dataclass(frozen=True)
class TrackFix:
    """Where the track was at ``time``.

    ``segment`` is the index of the segment used. ``snapped_s`` is 0 for a time inside the
    segment; otherwise it is how many seconds before its start or after its end the time
    was. It is only nonzero within the tolerance, and then the fix is that end point.
    """

    time: datetime
    lat: float
    lon: float
    alt: float | None
    heading: float | None
    segment: int
    snapped_s: float = 0.0


@dataclass(frozen=True)
class OutsideTrack:
    """No position for ``image_time``: before, after, or in a gap of the track.

    ``kind`` is ``"before"``, ``"after"`` or ``"gap"``; for a gap, ``gap_start``/``gap_end``
    are the end of the segment before and the start of the one after. ``delta_s`` is how
    far the time lies from the nearest point that could have been used. :attr:`code` is the
    stable reason code, :attr:`message` the text for the user; it always states the image
    time and the track's span (like mapillary_tools' ``MapillaryOutsideGPXTrackError``, whose
    ``vars`` are image_time, gpx_start_time, gpx_end_time).
    """

    kind: Literal["before", "after", "gap"]
    image_time: datetime
    track_start: datetime
    track_end: datetime
    delta_s: float
    source: str = ""
    gap_start: datetime | None = None
    gap_end: datetime | None = None

    @property
    def code(self) -> str:
        """``outside_track`` (before/after the whole track) or ``in_track_gap``."""
        return "in_track_gap" if self.kind == "gap" else "outside_track"

    @property
    def message(self) -> str:
        span = f"the track spans {format_time(self.track_start)} to {format_time(self.track_end)}"
        where = f" ({self.source})" if self.source else ""
        image = f"image time {format_time(self.image_time)}"
        if self.kind == "before":
            return f"{image} is {_duration(self.delta_s)} before the track starts; {span}{where}"
        if self.kind == "after":
            return f"{image} is {_duration(self.delta_s)} after the track ends; {span}{where}"
        assert self.gap_start is not None and self.gap_end is not None
        gap = (self.gap_end - self.gap_start).total_seconds()
        return (
            f"{image} falls in a gap between track segments: one ends at "
            f"{format_time(self.gap_start)}, the next starts at {format_time(self.gap_end)} "
            f"({_duration(gap)} later), {_duration(self.delta_s)} from the nearer end; "
            f"positions are not interpolated across a gap; {span}{where}"
        )

    def to_error(self) -> ItemError:
        """The per-item error to record on the image's queue row."""
        return ItemError(self.message, reason=self.code)


def _lerp_angle(a: float, b: float, w: float) -> float:
    """Interpolate from ``a`` to ``b`` degrees along the shorter arc, result in [0, 360)."""
    diff = (b - a + 180.0) % 360.0 - 180.0
    return _wrap(a + diff * w)


def _lerp_lon(a: float, b: float, w: float) -> float:
    """Interpolate longitudes the short way round, result in [-180, 180]."""
    diff = (b - a + 180.0) % 360.0 - 180.0
    lon = a + diff * w
    if lon > 180.0:
        lon -= 360.0
    elif lon < -180.0:
        lon += 360.0
    return lon


def _pair_heading(a: TrackPoint, b: TrackPoint, w: float) -> float | None:
    if a.heading is not None and b.heading is not None:
        return _lerp_angle(a.heading, b.heading, w)
    if (a.lat, a.lon) != (b.lat, b.lon):
        return bearing_deg(a.lat, a.lon, b.lat, b.lon)
    return a.heading if a.heading is not None else b.heading


def _between(
    a: TrackPoint, b: TrackPoint, t: datetime, segment: int, snapped_s: float = 0.0
) -> TrackFix:
    span = b.time - a.time
    w = 0.0 if span == timedelta(0) else (t - a.time) / span
    alt = None if a.alt is None or b.alt is None else a.alt + (b.alt - a.alt) * w
    return TrackFix(
        time=t,
        lat=a.lat + (b.lat - a.lat) * w,
        lon=_lerp_lon(a.lon, b.lon, w),
        alt=alt,
        heading=_pair_heading(a, b, w),
        segment=segment,
        snapped_s=snapped_s,
    )


def _in_segment(track: Track, index: int, t: datetime) -> TrackFix:
    points = track.segments[index]
    if len(points) == 1:
        p = points[0]
        return TrackFix(t, p.lat, p.lon, p.alt, p.heading, index)
    i = bisect.bisect_left(track._times[index], t)
    if i == 0:
        return _between(points[0], points[1], t, index)
    return _between(points[i - 1], points[i], t, index)


def _at_end(track: Track, index: int, first: bool, t: datetime, snapped_s: float) -> TrackFix:
    """The fix at a segment's first or last point (heading from that segment's end pair)."""
    points = track.segments[index]
    p = points[0] if first else points[-1]
    if len(points) == 1:
        return TrackFix(t, p.lat, p.lon, p.alt, p.heading, index, snapped_s)
    a, b = (points[0], points[1]) if first else (points[-2], points[-1])
    heading = _pair_heading(a, b, 0.0 if first else 1.0)
    return TrackFix(t, p.lat, p.lon, p.alt, heading, index, snapped_s)


def _containing(track: Track, t: datetime) -> int | None:
    """Index of the latest-starting segment with start <= t <= end, if any."""
    i = bisect.bisect_right(track._starts, t) - 1
    while i >= 0 and track._max_end[i] >= t:
        if track.segments[i][-1].time >= t:
            return i
        i -= 1
    return None


def locate(
    track: Track, t: datetime, *, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> TrackFix | OutsideTrack:
    """The position on ``track`` at time ``t``, or why there is none.

    * ``t`` inside a segment (start <= t <= end): interpolated between its two neighbouring
      points as described in the module docstring. When segments overlap in time, the one
      that started last is used.
    * ``t`` in a gap between segments: snapped to the nearer segment end when that is at
      most ``tolerance_s`` away (the earlier segment's end on a tie), else
      ``OutsideTrack(kind="gap")``.
    * ``t`` before the first point or after the last: snapped to it within ``tolerance_s``,
      else ``OutsideTrack(kind="before" | "after")``.

    ``t`` must be timezone-aware; ``tolerance_s`` must be >= 0.
    """
    if tolerance_s < 0 or not math.isfinite(tolerance_s):
        raise ValueError(f"tolerance_s must be a finite number >= 0, got {tolerance_s}")
    t = _utc(t, "time")
    tol = timedelta(seconds=tolerance_s)
    inside = _containing(track, t)
    if inside is not None:
        return _in_segment(track, inside, t)

    # Not inside any segment: before the first, after the last, or in a gap.
    after = bisect.bisect_right(track._starts, t)  # first segment starting after t
    before = after - 1  # latest-starting segment that starts <= t (and ended before t)
    # With overlapping segments the latest end before t need not be segment `before`.
    prev_end = track._max_end[before] if before >= 0 else None
    next_start = track._starts[after] if after < len(track.segments) else None
    d_prev = (t - prev_end).total_seconds() if prev_end is not None else math.inf
    d_next = (next_start - t).total_seconds() if next_start is not None else math.inf
    if min(d_prev, d_next) <= tol.total_seconds():
        if d_prev <= d_next:
            index = next(i for i in range(before, -1, -1) if track.segments[i][-1].time == prev_end)
            return _at_end(track, index, first=False, t=t, snapped_s=d_prev)
        return _at_end(track, after, first=True, t=t, snapped_s=-d_next)

    common = {"image_time": t, "track_start": track.start, "track_end": track.end}
    if prev_end is None:
        return OutsideTrack("before", delta_s=d_next, source=track.source, **common)
    if next_start is None:
        return OutsideTrack("after", delta_s=d_prev, source=track.source, **common)
    return OutsideTrack(
        "gap",
        delta_s=min(d_prev, d_next),
        source=track.source,
        gap_start=prev_end,
        gap_end=next_start,
        **common,
    )


def apply_offsets(
    times: Sequence[datetime],
    *,
    offset_seconds: float = 0.0,
    use_gps_start_time: bool = False,
    track: Track | None = None,
) -> list[datetime]:
    """Camera times shifted for interpolation, in the order given (mapillary_tools semantics).

    With ``use_gps_start_time`` every time is first shifted by (track start − earliest image
    time), so the earliest image sits on the first track point
    (``--interpolation_use_gpx_start_time``); then ``offset_seconds`` is added to every time
    (``--interpolation_offset_time``). Both happen before :func:`locate`. ``track`` is
    required with ``use_gps_start_time`` (``ValueError`` otherwise). Like mapillary_tools,
    the earliest image is taken among the times passed: pass only the images geotagged
    together, and only those whose capture time could be read.
    """
    if not math.isfinite(offset_seconds):
        raise ValueError(f"offset_seconds must be finite, got {offset_seconds}")
    utc = [_utc(t, "image time") for t in times]
    shift = timedelta(seconds=offset_seconds)
    if use_gps_start_time:
        if track is None:
            raise ValueError("use_gps_start_time needs the track")
        if utc:
            shift += track.start - min(utc)
    return [t + shift for t in utc]
