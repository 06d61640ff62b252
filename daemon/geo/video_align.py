"""Placing a separate GPS track (a GPX or NMEA side file) on a video's timeline.

Pure: a :class:`~daemon.geo.track.Track` of UTC points and what the video says about its own
time in, movie-time points out. The video's clock is chosen in this order:

1. ``video_gps``: the video's own GPS time (a camera with a weak fix whose logger is better):
   the side track is read at the same UTC instants, as mapillary_tools' ``SYNC`` mode does;
2. ``creation_time``: the container's creation time (``mvhd``), already corrected by the
   caller for the camera's time zone and clock error;
3. ``rebase``: only for a track made for this one video (named after it, ``%g.gpx``): its
   first point is taken as the start of the video — what mapillary_tools does whenever the
   video has no GPS of its own. Used when there is no creation time, or the track does not
   cover it (a camera clock never set).

A track shared by many videos (a logger's day) is never rebased: a video it does not cover
waits for one that does (``outside_track``), and a video with no time at all cannot be placed
on it (``no_video_time``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from daemon.errors import ItemError
from daemon.geo.track import Track, TrackPoint

Anchor = Literal["video_gps", "creation_time", "rebase"]


@dataclass(frozen=True)
class MoviePoint:
    """A side-track position at ``time_s`` seconds from the start of the movie, with the UTC
    time it was recorded (Unix seconds)."""

    time_s: float
    lat: float
    lon: float
    alt: float | None
    epoch_s: float


@dataclass(frozen=True)
class Aligned:
    points: tuple[MoviePoint, ...]
    start: datetime
    anchor: Anchor

    @property
    def note(self) -> str:
        how = {
            "video_gps": "synchronised by the video's own GPS time",
            "creation_time": "placed by the video's creation time",
            "rebase": "rebased: the track's first point taken as the start of the video",
        }[self.anchor]
        return f"{len(self.points)} point(s) from the side track, {how}"


def _lerp(a: TrackPoint, b: TrackPoint, t: datetime) -> TrackPoint:
    span = (b.time - a.time).total_seconds()
    w = 0.0 if span <= 0 else (t - a.time).total_seconds() / span
    alt = a.alt + (b.alt - a.alt) * w if a.alt is not None and b.alt is not None else None
    return TrackPoint(t, a.lat + (b.lat - a.lat) * w, a.lon + (b.lon - a.lon) * w, alt)


def _window(points: list[TrackPoint], start: datetime, end: datetime | None) -> list[TrackPoint]:
    """The points recorded in [start, end], with a point interpolated at each end the track
    spans, so the movie's first and last seconds are placed too."""
    times = [p.time for p in points]
    lo = bisect_left(times, start)
    hi = len(points) if end is None else bisect_left(times, end)
    while end is not None and hi < len(points) and points[hi].time == end:
        hi += 1
    inside = points[lo:hi]
    if 0 < lo < len(points) and points[lo].time != start:
        inside.insert(0, _lerp(points[lo - 1], points[lo], start))
    if end is not None and 0 < hi < len(points) and inside and inside[-1].time != end:
        inside.append(_lerp(points[hi - 1], points[hi], end))
    return inside


def _movie(points: list[TrackPoint], start: datetime) -> tuple[MoviePoint, ...]:
    return tuple(
        MoviePoint((p.time - start).total_seconds(), p.lat, p.lon, p.alt, p.time.timestamp())
        for p in points
    )


def align_side_track(
    track: Track,
    name: str,
    *,
    duration_s: float | None,
    video_gps_start: datetime | None,
    creation: datetime | None,
    per_video: bool,
) -> Aligned:
    """The part of ``track`` that covers the video ``name``, on the movie's timeline.

    ``video_gps_start`` is the UTC time of movie time 0 by the video's own GPS (None when it has
    none), ``creation`` the corrected container creation time (None when unknown),
    ``duration_s`` the movie's length (None: up to the end of the track), ``per_video`` whether
    the track file was made for this video alone (then rebasing is allowed, see the module
    docstring). Raises :class:`ItemError`: ``outside_track`` (the track does not cover the
    video: held until one does), ``no_video_time`` (nothing to place it by).
    """
    points = sorted(track.points(), key=lambda p: p.time)
    if not points:
        raise ItemError(f"{name}: the side track {track.source} has no points", reason="no_track")
    length = timedelta(seconds=duration_s) if duration_s is not None else None
    if video_gps_start is not None or creation is not None:
        anchor: Anchor = "video_gps" if video_gps_start is not None else "creation_time"
        start = video_gps_start if video_gps_start is not None else creation
        assert start is not None
        inside = _window(points, start, start + length if length is not None else None)
        if inside:
            return Aligned(_movie(inside, start), start, anchor)
        if not per_video or anchor == "video_gps":
            raise ItemError(
                f"{name}: the track {track.source} ({points[0].time:%Y-%m-%d %H:%M:%S} to "
                f"{points[-1].time:%H:%M:%S} UTC) does not cover the video "
                f"({start:%Y-%m-%d %H:%M:%S} UTC by its "
                f"{'GPS' if anchor == 'video_gps' else 'creation time'}); check the camera's "
                "clock or time_zone / offset_time",
                reason="outside_track",
            )
    elif not per_video:
        raise ItemError(
            f"{name}: the video has no creation time and no GPS time, so it cannot be placed on "
            f"the shared track {track.source}; name a track after the video (%g.gpx) instead",
            reason="no_video_time",
        )
    start = points[0].time
    inside = _window(points, start, start + length if length is not None else None)
    return Aligned(_movie(inside, start), start, "rebase")
