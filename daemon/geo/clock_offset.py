"""How far a camera's clock is off the GPS track's clock (pure; beyond mapillary_tools).

Cameras are often set to the wrong zone (whole hours, or 30/45 minutes: India, Nepal …) and
drift by seconds to minutes; mapillary_tools then says ``MapillaryOutsideGPXTrackError`` or,
worse, places every image on the wrong stretch of road, and leaves the user to find the
``--interpolation_offset_time`` by hand (mapillary_tools #827, #441, #611, #478).
:func:`estimate_offset` finds the offset, in seconds, that *adds* to camera times (the same
sign as ``offset_seconds`` in :func:`daemon.geo.track.apply_offsets` and mapillary_tools'
``--interpolation_offset_time``): camera time + offset = GPS time.

What signal there is, and how it is used:

**Images with positions** (``method="positions"``). Each image's EXIF position says where it
was taken; the track says when it was there. For a candidate offset ``d``, the *misfit*
``r(d)`` is the mean distance, in metres, between each image's position and the track's
position at (image time + ``d``), over the best-fitting 80 % of the images (so a few images
with bad GPS do not spoil it). If fewer than 80 % of the images fall on the track at ``d``,
``r(d)`` is infinite. Candidate offsets come from the times at which the track passes within
150 m of image positions, clustered and ranked by how many images vote for them; the best
ones are refined down to 0.01 s.

The fit is **unambiguous** when the best offset ``d*`` has ``r(d*) <= 30 m``, and the best
*distinct* alternative ``d2`` — the best among candidate offsets more than 30 s away from
``d*`` — is clearly worse: ``r(d2) >= 2·r(d*) + 15 m``, or there is no such alternative.
A loop driven twice while the images cover one lap, or images all taken at one place, give
alternatives that fit as well, and are refused.

**Images without positions**. Only their times are known. Two signals remain:

* ``method="span"``: every image must fall inside a track segment. The set of offsets that
  achieve this (an intersection of intervals, narrow when the camera and the logger were
  switched on and off together, or when both stopped during the same breaks) is computed
  exactly. It is **unambiguous** when it is not empty and at most 2 s wide (first to last
  feasible offset); the estimate is its middle.
* ``method="spacing"``: a camera that shoots every N metres (distance-triggered capture)
  produces images evenly spaced *along the track* only at the right offset. For an offset
  ``d`` the *spacing misfit* ``c(d)`` is the coefficient of variation (standard deviation /
  mean) of the along-track distance between consecutive images placed at time + ``d``;
  ``c`` is infinite when an image falls off the track or the mean step is under 1 m (up to
  150 consecutive pairs, spread over the drive, are measured). It is **unambiguous** when
  ``c(d*) <= 0.15`` and the best feasible offset more than 2 s away from ``d*`` (near or
  far) has ``c(d2) >= c(d*) + 0.1``; when the window holds no offset 2 s away, uniqueness
  cannot be tested and the case is refused. This needs speed changes (stops, turns,
  traffic): at a constant speed every offset spaces the images evenly. The valley is
  local, hence 2 s rather than the 30 s of positions: a 2 s error in stop-and-go traffic
  already makes the spacing vary by about 25 %.

Limits: the estimator interpolates longitudes linearly and projects positions on a local
plane, so a track crossing the antimeridian is not aligned correctly; offsets are searched
only where the track has points (no extrapolation).

Everything else is :class:`Ambiguous`, with a reason saying which case it is. In particular
images without positions shot at fixed *time* intervals (time-lapse, most dashcams) while
the track is longer than the images span carry no usable signal: any offset that keeps them
on the track fits equally well, and guessing would put them on the wrong road.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from statistics import fmean, median, pstdev
from typing import Literal

from daemon.geo.distance import distance_m
from daemon.geo.track import Track, format_time

__all__ = ["Ambiguous", "OffsetEstimate", "describe_offset", "estimate_offset"]

#: Two offsets closer than this are the same fit, not alternatives.
DISTINCT_S = 30.0
#: Fraction of the positioned images whose distances make the misfit.
TRIM = 0.8
#: Largest acceptable positions misfit (metres) and the margin a runner-up must lose by.
MAX_MISFIT_M = 30.0
MARGIN_M = 15.0
#: Radius (metres) within which a track pass near an image position votes for an offset.
PASS_RADIUS_M = 150.0
#: Fewer positioned images than this and positions are not used.
MIN_POSITIONED = 3
#: Widest feasible window (seconds) the span method accepts.
MAX_SPAN_WIDTH_S = 2.0
#: Spacing method: acceptable coefficient of variation, how far a rival must be (seconds)
#: and by how much it must lose, minimum images.
MAX_CV = 0.15
SPACING_DISTINCT_S = 2.0
CV_MARGIN = 0.1
MIN_SPACING_IMAGES = 6

_REFINE_STEPS = (4.0, 1.0, 0.25, 0.05, 0.01)
_CANDIDATE_IMAGES = 64
_SCORING_IMAGES = 300
_SPACING_IMAGES = 150
_COARSE_PAIRS = 40
_MAX_GROUPS = 40
_MAX_GRID = 1200
_CELL_M = 250.0
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON = 111_320.0


@dataclass(frozen=True)
class OffsetEstimate:
    """An unambiguous offset: camera time + ``offset_s`` = track time.

    ``fit`` is the misfit at ``offset_s`` in the method's unit (``positions``: metres;
    ``spacing``: coefficient of variation; ``span``: width of the feasible window in
    seconds); ``runner_up_*`` is the best distinct alternative that lost (None when there was
    none). ``images_used`` counts the images the method looked at.
    """

    offset_s: float
    method: Literal["positions", "spacing", "span"]
    fit: float
    runner_up_offset_s: float | None
    runner_up_fit: float | None
    images_used: int

    @property
    def summary(self) -> str:
        """One line for the status page and the log."""
        how = {
            "positions": f"fitted on {self.images_used} image positions, "
            f"{self.fit:.1f} m from the track",
            "spacing": f"fitted on the spacing of {self.images_used} images along the track "
            f"(variation {self.fit:.3f})",
            "span": f"the only window of {self.fit:.2f} s that puts all "
            f"{self.images_used} images on the track",
        }[self.method]
        other = ""
        if self.runner_up_offset_s is not None and self.runner_up_fit is not None:
            unit = {"positions": " m", "spacing": "", "span": " s"}[self.method]
            other = (
                f"; next best {_signed(self.runner_up_offset_s)} fits at "
                f"{self.runner_up_fit:.3g}{unit}"
            )
        return f"{describe_offset(self.offset_s)}: {how}{other}"


@dataclass(frozen=True)
class Ambiguous:
    """No offset could be trusted. ``reason`` says why, for a human.

    ``candidates`` are the (offset_s, misfit) pairs that were compared, best first (empty
    when no offset fitted at all).
    """

    reason: str
    candidates: tuple[tuple[float, float], ...] = ()


def _signed(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    s = abs(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{int(hours)} h {int(minutes)} min {secs:.2f} s"
    if minutes:
        return f"{sign}{int(minutes)} min {secs:.2f} s"
    return f"{sign}{secs:.2f} s"


def describe_offset(offset_s: float) -> str:
    """``camera clock 1 h 0 min 37.00 s behind GPS time (a +01:00 zone error and 37.00 s)``."""
    where = "behind" if offset_s >= 0 else "ahead of"
    text = f"camera clock {_signed(abs(offset_s))[1:]} {where} GPS time (offset {_signed(offset_s)}"
    zone = round(offset_s / 900.0) * 900
    drift = offset_s - zone
    if zone and abs(drift) <= 600:
        z = abs(zone) // 60
        text += f": a {'+' if zone > 0 else '-'}{z // 60:02d}:{z % 60:02d} zone error"
        text += f" and {_signed(drift)} drift"
    return text + ")"


class _Line:
    """The track as floats (seconds since its start), for fast repeated lookups."""

    def __init__(self, track: Track) -> None:
        self.t0 = track.start
        self.times: list[list[float]] = []
        self.lat: list[list[float]] = []
        self.lon: list[list[float]] = []
        self.cum: list[list[float]] = []
        for segment in track.segments:
            self.times.append([(p.time - self.t0).total_seconds() for p in segment])
            self.lat.append([p.lat for p in segment])
            self.lon.append([p.lon for p in segment])
            cum = [0.0]
            for a, b in pairwise(segment):
                cum.append(cum[-1] + distance_m(a.lat, a.lon, b.lat, b.lon))
            self.cum.append(cum)
        self.starts = [ts[0] for ts in self.times]
        self.ends = [ts[-1] for ts in self.times]
        self.max_end = [max(self.ends[: i + 1]) for i in range(len(self.ends))]
        self.count = sum(len(ts) for ts in self.times)
        self.span = max(self.ends) - self.starts[0]
        self._index: dict[tuple[int, int], list[tuple[int, int]]] | None = None
        self._big: list[tuple[int, int]] = []
        lats = [la for seg in self.lat for la in seg]
        self._cos = max(0.05, math.cos(math.radians(fmean(lats))))

    def where(self, t: float) -> tuple[int, int, float] | None:
        """(segment, index of the right neighbour, weight) for t inside a segment, else None."""
        i = bisect.bisect_right(self.starts, t) - 1
        while i >= 0 and self.max_end[i] >= t:
            if t <= self.ends[i]:
                ts = self.times[i]
                k = bisect.bisect_left(ts, t)
                if k == 0:
                    return i, min(1, len(ts) - 1), 0.0
                span = ts[k] - ts[k - 1]
                return i, k, 0.0 if span == 0 else (t - ts[k - 1]) / span
            i -= 1
        return None

    def position(self, t: float) -> tuple[float, float] | None:
        found = self.where(t)
        if found is None:
            return None
        s, k, w = found
        lat, lon = self.lat[s], self.lon[s]
        j = max(k - 1, 0)
        return lat[j] + (lat[k] - lat[j]) * w, lon[j] + (lon[k] - lon[j]) * w

    def along(self, t: float) -> tuple[int, float] | None:
        """(segment, metres from the segment start) at time t."""
        found = self.where(t)
        if found is None:
            return None
        s, k, w = found
        cum = self.cum[s]
        j = max(k - 1, 0)
        return s, cum[j] + (cum[k] - cum[j]) * w

    # --- spatial index of track pieces, for candidate offsets --------------------------

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        return lon * _M_PER_DEG_LON * self._cos, lat * _M_PER_DEG_LAT

    def _build_index(self) -> dict[tuple[int, int], list[tuple[int, int]]]:
        index: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for s, (lats, lons) in enumerate(zip(self.lat, self.lon, strict=True)):
            for k in range(max(1, len(lats) - 1)):
                k2 = min(k + 1, len(lats) - 1)
                x1, y1 = self._xy(lats[k], lons[k])
                x2, y2 = self._xy(lats[k2], lons[k2])
                ix0 = math.floor((min(x1, x2) - PASS_RADIUS_M) / _CELL_M)
                ix1 = math.floor((max(x1, x2) + PASS_RADIUS_M) / _CELL_M)
                iy0 = math.floor((min(y1, y2) - PASS_RADIUS_M) / _CELL_M)
                iy1 = math.floor((max(y1, y2) + PASS_RADIUS_M) / _CELL_M)
                if (ix1 - ix0 + 1) * (iy1 - iy0 + 1) > 4096:
                    self._big.append((s, k))
                    continue
                for ix in range(ix0, ix1 + 1):
                    for iy in range(iy0, iy1 + 1):
                        index.setdefault((ix, iy), []).append((s, k))
        return index

    def passes(self, lat: float, lon: float) -> list[float]:
        """Times at which the track comes closest to (lat, lon), one per pass within radius."""
        if self._index is None:
            self._index = self._build_index()
        x, y = self._xy(lat, lon)
        cell = (math.floor(x / _CELL_M), math.floor(y / _CELL_M))
        hits: list[tuple[int, int, float, float]] = []  # segment, piece, distance, time
        for s, k in self._index.get(cell, []) + self._big:
            lats, lons, ts = self.lat[s], self.lon[s], self.times[s]
            k2 = min(k + 1, len(lats) - 1)
            x1, y1 = self._xy(lats[k], lons[k])
            x2, y2 = self._xy(lats[k2], lons[k2])
            dx, dy = x2 - x1, y2 - y1
            length2 = dx * dx + dy * dy
            u = (
                0.0
                if length2 == 0
                else max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / length2))
            )
            d = math.hypot(x1 + u * dx - x, y1 + u * dy - y)
            if d <= PASS_RADIUS_M:
                hits.append((s, k, d, ts[k] + u * (ts[k2] - ts[k])))
        hits.sort()
        out: list[float] = []
        run: list[tuple[int, int, float, float]] = []
        for hit in hits:
            if run and (hit[0] != run[-1][0] or hit[1] != run[-1][1] + 1):
                out.append(min(run, key=lambda h: h[2])[3])
                run = []
            run.append(hit)
        if run:
            out.append(min(run, key=lambda h: h[2])[3])
        return out


def _even(items: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` items spread evenly, keeping the first and last."""
    n = len(items)
    if n <= limit:
        return list(items)
    return [items[round(i * (n - 1) / (limit - 1))] for i in range(limit)]


def _refine(
    cost: Callable[[float], float], start: float, allowed: Callable[[float], bool]
) -> tuple[float, float]:
    """Local search from ``start``: scan ±4 steps at each step size, keep the best."""
    best, best_cost = start, cost(start)
    for step in _REFINE_STEPS:
        centre = best
        for j in range(-4, 5):
            d = centre + j * step
            if j == 0 or not allowed(d):
                continue
            c = cost(d)
            if c < best_cost:
                best, best_cost = d, c
    return best, best_cost


def _by_positions(
    times: list[float], positions: list[tuple[float, float]], line: _Line
) -> OffsetEstimate | Ambiguous:
    order = sorted(range(len(times)), key=lambda i: times[i])
    voters = _even(order, _CANDIDATE_IMAGES)
    scorers = _even(order, _SCORING_IMAGES)
    votes: list[float] = []
    for i in voters:
        lat, lon = positions[i]
        votes.extend(tau - times[i] for tau in line.passes(lat, lon))
    if not votes:
        return Ambiguous(
            f"the track never comes within {PASS_RADIUS_M:.0f} m of any of the "
            f"{len(times)} image positions: the images were not taken along this track"
        )
    votes.sort()
    groups: list[list[float]] = [[votes[0]]]
    for v in votes[1:]:
        if v - groups[-1][-1] <= 2.0:
            groups[-1].append(v)
        else:
            groups.append([v])
    groups.sort(key=len, reverse=True)
    keep = math.ceil(TRIM * len(scorers))

    def misfit(d: float) -> float:
        dists = []
        for i in scorers:
            p = line.position(times[i] + d)
            if p is not None:
                lat, lon = positions[i]
                dists.append(distance_m(lat, lon, p[0], p[1]))
        if len(dists) < keep:
            return math.inf
        dists.sort()
        return fmean(dists[:keep])

    scored = sorted((misfit(median(g)), median(g)) for g in groups[:_MAX_GROUPS])
    if not math.isfinite(scored[0][0]):
        return Ambiguous(
            f"no offset puts {TRIM:.0%} of the {len(times)} positioned images on the track: "
            "the track does not cover the time the images span",
        )
    best, best_fit = math.nan, math.inf
    for f, d in scored[:3]:  # a group's median can sit off its valley floor: refine a few
        if math.isfinite(f):
            found = _refine(misfit, d, lambda _: True)
            if found[1] < best_fit:
                best, best_fit = found

    def distinct(d: float) -> bool:
        return abs(d - best) > DISTINCT_S

    rivals = [(f, d) for f, d in scored if distinct(d) and math.isfinite(f)]
    runner: tuple[float, float] | None = None
    if rivals:
        d2, f2 = _refine(misfit, rivals[0][1], distinct)
        runner = (d2, f2)
    candidates = ((best, best_fit),) + ((runner,) if runner else ())
    if best_fit > MAX_MISFIT_M:
        return Ambiguous(
            f"even the best offset ({_signed(best)}) leaves the images {best_fit:.0f} m from "
            f"the track on average (at most {MAX_MISFIT_M:.0f} m accepted): the image "
            "positions and the track do not describe the same drive",
            candidates,
        )
    if runner is not None and runner[1] < 2 * best_fit + MARGIN_M:
        return Ambiguous(
            f"two offsets fit the image positions about equally: {_signed(best)} "
            f"({best_fit:.1f} m) and {_signed(runner[0])} ({runner[1]:.1f} m); the track "
            "passes the same places at different times (a loop, a road driven twice, or "
            "images taken while standing still), so the clock offset cannot be told",
            candidates,
        )
    return OffsetEstimate(
        offset_s=round(best, 3),
        method="positions",
        fit=best_fit,
        runner_up_offset_s=None if runner is None else round(runner[0], 3),
        runner_up_fit=None if runner is None else runner[1],
        images_used=len(scorers),
    )


def _intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _feasible(times: list[float], line: _Line) -> list[tuple[float, float]]:
    """Offsets (sorted, disjoint intervals) that put every time inside some segment."""
    spans = sorted(zip(line.starts, line.ends, strict=True))
    merged: list[tuple[float, float]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    feasible: list[tuple[float, float]] | None = None
    for t in sorted(set(times)):
        allowed = [(lo - t, hi - t) for lo, hi in merged]
        feasible = allowed if feasible is None else _intersect(feasible, allowed)
        if not feasible:
            return []
    return feasible or []


def _by_time(times: list[float], line: _Line) -> OffsetEstimate | Ambiguous:
    times = sorted(times)
    image_span = times[-1] - times[0]
    feasible = _feasible(times, line)
    n = len(times)
    if not feasible:
        return Ambiguous(
            f"no offset puts all {n} images on the track: they span {_signed(image_span)[1:]}, "
            f"the track {_signed(line.span)[1:]} in {len(line.starts)} segment(s), and every "
            "shift leaves some image before, after or in a gap of the track"
        )
    lo, hi = feasible[0][0], feasible[-1][1]
    if hi - lo <= MAX_SPAN_WIDTH_S:
        return OffsetEstimate(
            offset_s=round((lo + hi) / 2, 3),
            method="span",
            fit=hi - lo,
            runner_up_offset_s=None,
            runner_up_fit=None,
            images_used=n,
        )
    window = (
        f"the images carry no positions, so only their times can place them, and every "
        f"offset from {_signed(lo)} to {_signed(hi)} keeps all {n} images on the track"
    )
    if n < MIN_SPACING_IMAGES:
        return Ambiguous(f"{window}; too few images ({n}) to compare their spacing")
    pairs = _even(range(n - 1), _SPACING_IMAGES)

    def spread_of(sample: Sequence[int]) -> Callable[[float], float]:
        def spread(d: float) -> float:
            # Along-track metres between each sampled image and the next one.
            steps = []
            for i in sample:
                here, there = line.along(times[i] + d), line.along(times[i + 1] + d)
                if here is None or there is None:
                    return math.inf
                if here[0] == there[0]:
                    steps.append(there[1] - here[1])
            if len(steps) < MIN_SPACING_IMAGES - 1:
                return math.inf
            mean = fmean(steps)
            return math.inf if mean < 1.0 else pstdev(steps) / mean

        return spread

    spread = spread_of(pairs)
    coarse = spread_of(_even(pairs, _COARSE_PAIRS))  # for scanning the window quickly

    def inside(d: float) -> bool:
        return any(a <= d <= b for a, b in feasible)

    measure = sum(b - a for a, b in feasible)
    step = max(0.5, measure / _MAX_GRID)
    grid: list[tuple[float, float]] = []
    for a, b in feasible:
        count = max(1, math.ceil((b - a) / step))
        grid.extend(
            (coarse(a + (b - a) * j / count), a + (b - a) * j / count) for j in range(count + 1)
        )
    grid.sort()
    if not math.isfinite(grid[0][0]):
        return Ambiguous(f"{window}; the track barely moves there, so spacing cannot help")
    best, best_fit = _refine(spread, grid[0][1], inside)
    for _, d in grid[1:8]:  # a few more starting points, in case the coarse scan misled
        d_ref, f_ref = _refine(spread, d, inside)
        if f_ref < best_fit:
            best, best_fit = d_ref, f_ref

    def rival(d: float) -> bool:
        return inside(d) and abs(d - best) > SPACING_DISTINCT_S

    # The runner-up: the best grid rival, and the valley walls just beyond 2 s, refined.
    starts = [d for _, d in grid if rival(d)][:1]
    starts += [
        d for d in (best - SPACING_DISTINCT_S - 0.01, best + SPACING_DISTINCT_S + 0.01) if rival(d)
    ]
    runner: tuple[float, float] | None = None
    for d in starts:
        found = _refine(spread, d, rival)
        if runner is None or found[1] < runner[1]:
            runner = found
    candidates = ((best, best_fit),) + ((runner,) if runner else ())
    advice = (
        "Cameras shooting at fixed time intervals give no signal here: set the offset, or "
        "use images with GPS positions"
    )
    if best_fit > MAX_CV:
        return Ambiguous(
            f"{window}, and at no offset are the images evenly spaced along the track, as a "
            f"distance-triggered camera's would be (best {_signed(best)}: variation "
            f"{best_fit:.3f}, at most {MAX_CV} accepted). {advice}",
            candidates,
        )
    if runner is None:
        return Ambiguous(
            f"{window}: too wide to trust ({hi - lo:.2f} s, at most {MAX_SPAN_WIDTH_S} s) and "
            f"too narrow to test whether the spacing of the images singles one out. {advice}",
            candidates,
        )
    if runner[1] < best_fit + CV_MARGIN:
        return Ambiguous(
            f"{window}, and the images are evenly spaced along the track at distinct offsets "
            f"alike ({_signed(best)}: variation {best_fit:.3f}; {_signed(runner[0])}: "
            f"{runner[1]:.3f}): the speed hardly changes, so the spacing cannot pin the "
            f"offset. {advice}",
            candidates,
        )
    return OffsetEstimate(
        offset_s=round(best, 3),
        method="spacing",
        fit=best_fit,
        runner_up_offset_s=None if runner is None else round(runner[0], 3),
        runner_up_fit=None if runner is None else runner[1],
        images_used=len(pairs) + 1,
    )


def estimate_offset(
    image_times: Sequence[datetime],
    track: Track,
    *,
    image_positions: Sequence[tuple[float, float] | None] | None = None,
) -> OffsetEstimate | Ambiguous:
    """The offset (seconds, added to camera times) that aligns the images with ``track``.

    ``image_times`` are the camera's capture times, timezone-aware, as the camera wrote them
    (before any configured offset). ``image_positions``, when given, has one entry per time:
    the image's EXIF (lat, lon), or None. With at least three positions the positions method
    decides alone; otherwise the times do (span, then spacing). See the module docstring for
    the exact criteria of "unambiguous".
    """
    if image_positions is not None and len(image_positions) != len(image_times):
        raise ValueError(f"{len(image_positions)} positions for {len(image_times)} image times")
    if not image_times:
        return Ambiguous("no images to align")
    if track.point_count < 2 or (track.end - track.start).total_seconds() < 1.0:
        return Ambiguous(
            f"the track is too short to align anything: {track.point_count} point(s) from "
            f"{format_time(track.start)} to {format_time(track.end)}"
        )
    line = _Line(track)
    for t in image_times:
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"image times must be timezone-aware, got {t.isoformat()}")
    seconds = [(t - line.t0).total_seconds() for t in image_times]
    if image_positions is not None:
        pairs = [(s, p) for s, p in zip(seconds, image_positions, strict=True) if p is not None]
        if len(pairs) >= MIN_POSITIONED:
            return _by_positions([s for s, _ in pairs], [p for _, p in pairs], line)
    return _by_time(seconds, line)
