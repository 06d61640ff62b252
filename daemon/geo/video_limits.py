"""Whether a video's GPS track may be uploaded natively: mapillary_tools' video limits, plus
privacy zones.

Pure: points in, a refusal (reason, message) or None out. mapillary_tools 0.14.7
(``_check_video_limits``) refuses a video whose every point lies within 10 m of the first
(stationary), that is larger than the size limit, that has a point at (0, 0), or whose average
speed (path length ÷ time, GPS time when known) exceeds 400 km/h; in that order here too.
``zones`` refuses a video whose track enters a privacy zone at all; the daemon does not pass
them: it trims such a video at keyframes instead (:mod:`daemon.geo.video_trim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from daemon.geo.distance import distance_m
from daemon.geo.privacy import Zone, zone_containing

STATIONARY_RADIUS_M = 10.0
MAX_VIDEO_BYTES = 110 * 2**30


@dataclass(frozen=True)
class VideoPoint:
    time_s: float
    lat: float
    lon: float
    epoch_s: float | None = None


@dataclass(frozen=True)
class VideoRefusal:
    reason: str
    message: str


def average_speed_kmh(points: Sequence[VideoPoint]) -> float:
    """Path length over elapsed time (GPS time when both ends have it), in km/h; 0 for fewer
    than two points or no elapsed time."""
    if len(points) < 2:
        return 0.0
    length = sum(distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(points))
    first, last = points[0], points[-1]
    if first.epoch_s is not None and last.epoch_s is not None:
        elapsed = last.epoch_s - first.epoch_s
    else:
        elapsed = last.time_s - first.time_s
    return 0.0 if elapsed <= 0 else length / elapsed * 3.6


def check_video(
    name: str,
    points: Sequence[VideoPoint],
    size: int,
    *,
    max_speed_kmh: float = 400.0,
    max_bytes: int = MAX_VIDEO_BYTES,
    zones: Sequence[Zone] = (),
) -> VideoRefusal | None:
    """Why the video ``name`` must not be uploaded natively, or None if it may."""
    if not points:
        return VideoRefusal("no_video_gps", f"{name}: no GPS points")
    for p in points:
        index = zone_containing(p.lat, p.lon, zones)
        if index is not None:
            label = f'"{zones[index].name}"' if zones[index].name else f"#{index + 1}"
            return VideoRefusal(
                "privacy_zone",
                f"{name}: the track enters privacy zone {label} at {p.time_s:.1f} s; a native "
                'video cannot be cut without re-encoding (video = "frames" drops only the '
                "frames inside the zone)",
            )
    first = points[0]
    if all(distance_m(first.lat, first.lon, p.lat, p.lon) <= STATIONARY_RADIUS_M for p in points):
        return VideoRefusal(
            "stationary_video",
            f"{name}: every GPS point is within {STATIONARY_RADIUS_M:g} m of the first "
            "(a parked car)",
        )
    if size > max_bytes:
        return VideoRefusal(
            "file_too_large", f"{name}: {size} bytes is over the {max_bytes}-byte limit"
        )
    if any(p.lat == 0 and p.lon == 0 for p in points):
        return VideoRefusal("null_island", f"{name}: a GPS point is at (0, 0) (no fix)")
    speed = average_speed_kmh(points)
    if speed > max_speed_kmh:
        return VideoRefusal(
            "too_fast",
            f"{name}: average speed {speed:.1f} km/h is over {max_speed_kmh:g} km/h",
        )
    return None
