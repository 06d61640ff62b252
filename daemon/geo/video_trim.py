"""Trimming a native video: which stretches of it may be uploaded, each as its own clip (pure).

A video uploaded natively cannot be cut between any two frames without re-encoding, but it can
be cut at a keyframe: :mod:`daemon.media.camm_mp4` copies the samples of a time window
byte for byte. This module decides the windows, from the video's GPS points, its keyframe
times and the options; it reads no file and no clock.

What is dropped:

* **Privacy zones** (:mod:`daemon.geo.privacy`), conservatively: no frame that *could* show
  a place inside a zone is kept. Between two GPS fixes the position is not known, so a time
  span is unsafe when any position the vehicle could have had in it lies within the zone's
  radius plus ``margin_m``:

  - between fixes at most ``gap_s`` apart the vehicle is taken to be within ``margin_m`` of
    the straight line between them (the interpolation every geotagger uses); the span between
    them is unsafe if that line passes within the widened radius;
  - across a longer gap, and before the first / after the last fix, the path is unknown: any
    place reachable at ``max_speed_mps`` counts (an ellipse with the two fixes as foci, a
    circle around a lone end). A dashcam that gets its first fix a minute after leaving home
    therefore loses that minute when home is a zone;
  - every unsafe span is then widened by ``margin_s`` on each side (the GPS fix lags the
    picture; clocks of two tracks are never exactly in step).

* **Parked stretches** (``parked_seconds`` > 0): where every point stays within
  ``parked_radius_m`` of the stretch's first point for at least ``parked_seconds`` (the car
  parked with the dashcam recording). Detected on the points thinned to one per second, which
  is plenty for a rule measured in tens of seconds and keeps a long 18 Hz track cheap.

What is kept: each stretch between the dropped spans, starting at the first keyframe at or
after the stretch begins (a clip must start at a frame that decodes on its own) and ending
where the next dropped span begins (the MP4 cut keeps only frames that end by then). A stretch
shorter than ``min_clip_seconds`` from that keyframe, or holding fewer than
``min_clip_points`` GPS points, is dropped too: the server cannot place a clip of a few frames.

When nothing is dropped the plan is *whole*: the video is uploaded as it is, as before
trimming existed. When no window is left the video is refused with the reason of what took
it (``privacy_zone`` before ``stationary_video``), as a video that breaks a limit is.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from daemon.geo.distance import EARTH_RADIUS_M, haversine_m
from daemon.geo.privacy import Zone
from daemon.geo.video_limits import VideoPoint, VideoRefusal

__all__ = [
    "PARKED",
    "PRIVACY",
    "Cut",
    "TrimOptions",
    "TrimPlan",
    "Window",
    "parked_spans",
    "plan_trim",
    "zone_spans",
]

#: Reason codes of a dropped span.
PRIVACY = "privacy_zone"
PARKED = "parked"
#: Keyframe and span times closer than this (seconds) are the same instant.
_EPS = 1e-6


@dataclass(frozen=True)
class TrimOptions:
    """How a video is trimmed (see the module docstring). Raise ValueError for a negative or
    non-finite value, a non-positive speed, or a ``min_clip_points`` below 1."""

    zones: tuple[Zone, ...] = ()
    #: Parked stretches at least this long are dropped; 0 turns the rule off.
    parked_seconds: float = 120.0
    parked_radius_m: float = 10.0
    min_clip_seconds: float = 5.0
    min_clip_points: int = 3
    #: Metres added to every zone's radius (GPS error, a path that bends between fixes).
    margin_m: float = 10.0
    #: Seconds added to each side of every span that could be inside a zone.
    margin_s: float = 1.0
    #: Fixes further apart than this are a gap: the path between them is unknown.
    gap_s: float = 3.0
    #: The fastest the vehicle is assumed to move where the path is unknown (m/s).
    max_speed_mps: float = 400 / 3.6

    def __post_init__(self) -> None:
        for key in (
            "parked_seconds",
            "parked_radius_m",
            "min_clip_seconds",
            "margin_m",
            "margin_s",
            "gap_s",
        ):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.max_speed_mps) and self.max_speed_mps > 0):
            raise ValueError(f"max_speed_mps must be positive, got {self.max_speed_mps!r}")
        if self.min_clip_points < 1:
            raise ValueError(f"min_clip_points must be at least 1, got {self.min_clip_points}")


@dataclass(frozen=True)
class Window:
    """A stretch to upload: movie seconds ``[start_s, end_s)``, ``start_s`` a keyframe time;
    ``points`` GPS points fall inside it."""

    start_s: float
    end_s: float
    points: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Cut:
    """A dropped span ``[start_s, end_s]`` (movie seconds, within the video), why (``reason``:
    :data:`PRIVACY` or :data:`PARKED`) and a label for people (the zone by name, or ``#n``;
    never a coordinate)."""

    start_s: float
    end_s: float
    reason: str
    label: str


@dataclass(frozen=True)
class TrimPlan:
    """The outcome: ``windows`` to upload, in time order; ``cuts`` that were dropped;
    ``stretches`` every span between cuts (before the keyframe and minimum-length rules),
    ``end_s`` the video's end."""

    windows: tuple[Window, ...]
    cuts: tuple[Cut, ...]
    stretches: tuple[tuple[float, float], ...]
    end_s: float

    @property
    def whole(self) -> bool:
        """Nothing is dropped: upload the video as it is."""
        return not self.cuts

    def note(self) -> str:
        """What was kept and dropped, for status ("kept 2 of 3 stretches: 0–41 s, 63–120 s;
        dropped privacy zone "home" (22 s)")."""
        if self.whole:
            return "kept whole: nothing to trim"
        kept = ", ".join(f"{_secs(w.start_s)}–{_secs(w.end_s)} s" for w in self.windows)
        head = f"kept {len(self.windows)} of {len(self.stretches)} stretches"
        head += f": {kept}" if kept else ""
        dropped: dict[str, float] = {}
        for cut in self.cuts:
            dropped[cut.label] = dropped.get(cut.label, 0.0) + cut.end_s - cut.start_s
        parts = [f"{label} ({_secs(total)} s)" for label, total in dropped.items()]
        short = len(self.stretches) - len(self.windows)
        if short:
            parts.append(f"{short} stretch{'es' if short > 1 else ''} too short to upload")
        return f"{head}; dropped {', '.join(parts)}"

    def refusal(self, name: str) -> VideoRefusal | None:
        """Why the video ``name`` is not uploaded at all (no window left), or None."""
        if self.windows:
            return None
        zones = sorted({c.label for c in self.cuts if c.reason == PRIVACY})
        if zones:
            return VideoRefusal(
                PRIVACY,
                f"{name}: no stretch long enough to upload lies outside {', '.join(zones)} "
                f"({self.note()})",
            )
        return VideoRefusal(
            "stationary_video",
            f"{name}: parked all along, no stretch long enough to upload ({self.note()})",
        )


def _secs(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _merge(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Closed spans merged where they overlap or touch, in time order."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + _EPS:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _zone_label(index: int, zone: Zone) -> str:
    return f'privacy zone "{zone.name}"' if zone.name else f"privacy zone #{index + 1}"


def _segment_distance_m(zone: Zone, a: VideoPoint, b: VideoPoint) -> float:
    """Metres from the zone's centre to the straight segment a–b, in a plane tangent at the
    centre (exact enough for spans of kilometres, which is all a chord is used for)."""
    k = math.radians(1) * EARTH_RADIUS_M
    cos_lat = math.cos(math.radians(zone.lat))

    def xy(p: VideoPoint) -> tuple[float, float]:
        dlon = (p.lon - zone.lon + 180.0) % 360.0 - 180.0
        return dlon * k * cos_lat, (p.lat - zone.lat) * k

    (ax, ay), (bx, by) = xy(a), xy(b)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


def zone_spans(
    points: Sequence[VideoPoint], zone: Zone, end_s: float, options: TrimOptions
) -> list[tuple[float, float]]:
    """The spans of movie time (merged, widened by ``margin_s``, not clipped to the video)
    during which the vehicle could have been inside ``zone`` (see the module docstring).
    ``points`` must be in time order; none gives no span."""
    if not points:
        return []
    reach = zone.radius_m + options.margin_m
    speed = options.max_speed_mps
    d = [haversine_m(zone.lat, zone.lon, p.lat, p.lon) for p in points]
    spans: list[tuple[float, float]] = []
    first, last = points[0], points[-1]
    if first.time_s > 0 and d[0] - reach <= speed * first.time_s:
        spans.append((0.0, first.time_s))
    if end_s > last.time_s and d[-1] - reach <= speed * (end_s - last.time_s):
        spans.append((last.time_s, end_s))
    for i, p in enumerate(points):
        if d[i] <= reach:
            spans.append((p.time_s, p.time_s))
    for i in range(len(points) - 1):
        a, b = points[i], points[i + 1]
        dt = b.time_s - a.time_s
        if dt > options.gap_s:
            # anywhere with |PA| + |PB| <= speed * dt; |PA| >= |CA| - r for P in the disc
            unsafe = d[i] + d[i + 1] - 2 * reach <= speed * dt
        elif d[i] <= reach or d[i + 1] <= reach:
            unsafe = True
        else:
            # a point of the chord is within half its length of an end: prune far segments
            half = haversine_m(a.lat, a.lon, b.lat, b.lon) / 2
            unsafe = min(d[i], d[i + 1]) - half <= reach and (
                _segment_distance_m(zone, a, b) <= reach
            )
        if unsafe:
            spans.append((a.time_s, b.time_s))
    margin = options.margin_s
    return _merge((s - margin, e + margin) for s, e in spans)


def parked_spans(
    points: Sequence[VideoPoint], seconds: float, radius_m: float
) -> list[tuple[float, float]]:
    """Spans (merged) where every point stays within ``radius_m`` of the span's first point for
    at least ``seconds``; none when ``seconds`` is 0. Points in time order."""
    if seconds <= 0 or not points:
        return []
    thinned = [points[0]]
    for p in points[1:]:
        if p.time_s - thinned[-1].time_s >= 1.0:
            thinned.append(p)
    if thinned[-1] is not points[-1]:
        thinned.append(points[-1])
    spans = []
    i, n = 0, len(thinned)
    while i < n:
        anchor, j = thinned[i], i
        while j + 1 < n and (
            haversine_m(anchor.lat, anchor.lon, thinned[j + 1].lat, thinned[j + 1].lon) <= radius_m
        ):
            j += 1
        if thinned[j].time_s - anchor.time_s >= seconds:
            spans.append((anchor.time_s, thinned[j].time_s))
            i = j + 1
        else:
            i += 1
    return _merge(spans)


def _clip(start: float, end: float, end_s: float) -> tuple[float, float] | None:
    start, end = max(0.0, start), min(end_s, end)
    return (start, end) if end >= start else None


def plan_trim(
    points: Sequence[VideoPoint],
    keyframes: Sequence[float],
    end_s: float,
    options: TrimOptions,
) -> TrimPlan:
    """The windows of a video to upload (see the module docstring).

    ``points`` are the GPS points on the movie timeline (any order), ``keyframes`` the movie
    times at which a clip may start (the video track's clean sync samples, any order),
    ``end_s`` the end of the video. Pure; never raises for empty inputs (no keyframe: no
    window can start, so anything dropped leaves nothing).
    """
    pts = sorted(points, key=lambda p: p.time_s)
    keys = sorted(keyframes)
    cuts: list[Cut] = []
    for index, zone in enumerate(options.zones):
        for start, end in zone_spans(pts, zone, end_s, options):
            span = _clip(start, end, end_s)
            if span is not None:
                cuts.append(Cut(span[0], span[1], PRIVACY, _zone_label(index, zone)))
    for start, end in parked_spans(pts, options.parked_seconds, options.parked_radius_m):
        span = _clip(start, end, end_s)
        if span is not None:
            cuts.append(Cut(span[0], span[1], PARKED, "parked"))
    cuts.sort(key=lambda c: (c.start_s, c.end_s))
    blocked = _merge((c.start_s, c.end_s) for c in cuts)

    stretches: list[tuple[float, float]] = []
    starts_after_cut: list[bool] = []
    pos, after_cut = 0.0, False
    for start, end in blocked:
        if start > pos + _EPS:
            stretches.append((pos, start))
            starts_after_cut.append(after_cut)
        pos, after_cut = max(pos, end), True
    if end_s > pos + _EPS:
        stretches.append((pos, end_s))
        starts_after_cut.append(after_cut)

    times = [p.time_s for p in pts]
    windows = []
    for (start, end), after in zip(stretches, starts_after_cut, strict=True):
        # after a cut the cut's own end instant is still unsafe: the keyframe must be later
        k = bisect.bisect_right(keys, start) if after else bisect.bisect_left(keys, start - _EPS)
        if k == len(keys) or keys[k] >= end:
            continue
        t0 = keys[k]
        count = bisect.bisect_left(times, end) - bisect.bisect_left(times, t0)
        if not cuts or (
            end - t0 >= options.min_clip_seconds - _EPS and count >= options.min_clip_points
        ):
            windows.append(Window(t0, end, count))
    return TrimPlan(tuple(windows), tuple(cuts), tuple(stretches), end_s)
