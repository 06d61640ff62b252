"""daemon.geo.video_trim: which stretches of a native video are kept (a table of cases).

Tracks are built here: a vehicle moving east along a parallel at a set speed, one fix per
``step`` seconds, so every expected time can be worked out by hand (written next to each
case). Keyframes are every 2 s unless a case says otherwise.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence

import pytest

from daemon.geo.distance import EARTH_RADIUS_M, haversine_m
from daemon.geo.privacy import Zone
from daemon.geo.video_limits import VideoPoint
from daemon.geo.video_trim import PARKED, PRIVACY, TrimOptions, plan_trim, zone_spans

LAT, LON = 48.0, 11.0
M_PER_DEG_LAT = math.radians(1) * EARTH_RADIUS_M
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LAT))


def at(x_m: float, y_m: float = 0.0) -> tuple[float, float]:
    """(lat, lon) of the point x metres east and y metres north of the origin."""
    return LAT + y_m / M_PER_DEG_LAT, LON + x_m / M_PER_DEG_LON


def drive(
    seconds: float, *, speed: float = 10.0, step: float = 1.0, start: float = 0.0, x0: float = 0.0
) -> list[VideoPoint]:
    """Fixes from ``start`` to ``start + seconds`` (inclusive), moving east at ``speed``."""
    out = []
    for i in range(round(seconds / step) + 1):
        t = start + i * step
        lat, lon = at(x0 + (t - start) * speed)
        out.append(VideoPoint(t, lat, lon))
    return out


def zone(x_m: float, radius: float, name: str = "home", y_m: float = 0.0) -> Zone:
    lat, lon = at(x_m, y_m)
    return Zone(lat, lon, radius, name)


def keys(end: float, every: float = 2.0) -> list[float]:
    return [i * every for i in range(int(end / every) + 1)]


def windows(plan: object) -> list[tuple[float, float]]:
    return [(round(w.start_s, 6), round(w.end_s, 6)) for w in plan.windows]  # type: ignore[attr-defined]


NO_PARK = TrimOptions(parked_seconds=0)


def test_nothing_to_cut_is_whole() -> None:
    plan = plan_trim(drive(60), keys(60), 60.0, TrimOptions(zones=(zone(5000, 50),)))
    assert plan.whole and plan.cuts == ()
    assert windows(plan) == [(0.0, 60.0)]
    assert plan.refusal("v.mp4") is None
    assert plan.note() == "kept whole: nothing to trim"


def test_a_zone_in_the_middle_splits_the_video_at_keyframes() -> None:
    # 10 m/s, zone at 300 m radius 50 (+10 m margin): fixes 24..36 s are within 60 m, so the
    # segments 23–37 s touch it; 1 s margin each side: dropped 22–38 s. Keyframes every 2 s:
    # the second stretch starts at 40 s (38 is the cut's own end instant, still unsafe).
    opts = TrimOptions(zones=(zone(300, 50),), parked_seconds=0)
    plan = plan_trim(drive(60), keys(60), 60.0, opts)
    assert [(c.start_s, c.end_s, c.reason) for c in plan.cuts] == [(22.0, 38.0, PRIVACY)]
    assert windows(plan) == [(0.0, 22.0), (40.0, 60.0)]
    assert [w.points for w in plan.windows] == [22, 20]  # windows are [start, end)
    assert plan.note() == (
        'kept 2 of 2 stretches: 0–22 s, 40–60 s; dropped privacy zone "home" (16 s)'
    )


def test_keyframes_decide_where_a_clip_starts() -> None:
    opts = TrimOptions(zones=(zone(300, 50),), parked_seconds=0)
    plan = plan_trim(drive(60), [0.0, 10.0, 45.5], 60.0, opts)
    assert windows(plan) == [(0.0, 22.0), (45.5, 60.0)]
    # no keyframe before the video's end after the zone: only the first stretch is kept
    plan = plan_trim(drive(60), [0.0, 10.0], 60.0, opts)
    assert windows(plan) == [(0.0, 22.0)]
    assert plan.note().startswith("kept 1 of 2 stretches: 0–22 s;")


def test_a_chord_through_a_small_zone_between_two_fixes_is_cut() -> None:
    # 30 m/s at 1 Hz: fixes at 300 and 330 m; a 5 m zone at 315 m holds no fix, but the line
    # between the fixes crosses it (the car drove through it between t=10 and t=11)
    opts = TrimOptions(zones=(zone(315, 5),), parked_seconds=0, margin_m=0, min_clip_seconds=0)
    track = drive(30, speed=30)
    assert all(not opts.zones[0].contains(p.lat, p.lon) for p in track)
    plan = plan_trim(track, keys(30, 1), 30.0, opts)
    assert [(c.start_s, c.end_s) for c in plan.cuts] == [(9.0, 12.0)]
    # the same zone 40 m north of the road: the chord misses it
    away = TrimOptions(zones=(zone(315, 5, y_m=40),), parked_seconds=0, margin_m=0)
    assert plan_trim(track, keys(30, 1), 30.0, away).whole


@pytest.mark.parametrize(
    ("zone_x", "cut"),
    [
        # a 20 s gap (fixes at 100 m, t=10 and at 300 m, t=30) next to a zone at 200 m, 150 m
        # north: reachable at 30 m/s, so the whole gap goes (plus the 1 s margins)
        (200.0, (9.0, 31.0)),
        # the same zone 10 km away cannot be reached in 20 s
        (10_000.0, None),
    ],
)
def test_a_gps_gap_near_a_zone_is_cut_whole(zone_x: float, cut: tuple[float, float] | None) -> None:
    track = drive(10, speed=10) + drive(30, speed=10, start=30, x0=300)
    opts = TrimOptions(
        zones=(zone(zone_x, 20, y_m=150),), parked_seconds=0, max_speed_mps=30, min_clip_seconds=0
    )
    plan = plan_trim(track, keys(60, 1), 60.0, opts)
    assert [(c.start_s, c.end_s) for c in plan.cuts] == ([cut] if cut else [])


@pytest.mark.parametrize(
    ("distance_m", "cut"),
    [
        # first fix at 30 s, 200 m from a 50 m zone: 30 s at 30 m/s reaches it
        (200.0, (0.0, 31.0)),
        # 2 km away: 900 m of reach does not
        (2000.0, None),
    ],
)
def test_video_before_the_first_fix(distance_m: float, cut: tuple[float, float] | None) -> None:
    track = drive(30, start=30, x0=distance_m)
    opts = TrimOptions(zones=(zone(0, 50),), parked_seconds=0, max_speed_mps=30, margin_m=0)
    plan = plan_trim(track, keys(60), 60.0, opts)
    assert [(c.start_s, c.end_s) for c in plan.cuts] == ([cut] if cut else [])


def test_video_after_the_last_fix() -> None:
    # the fixes stop at 30 s, 100 m short of a zone; the video runs 30 s more
    track = drive(30, x0=-400)
    opts = TrimOptions(zones=(zone(0, 50),), parked_seconds=0, max_speed_mps=30, margin_m=0)
    plan = plan_trim(track, keys(60), 60.0, opts)
    assert [(c.start_s, c.end_s) for c in plan.cuts] == [(29.0, 60.0)]
    assert windows(plan) == [(0.0, 29.0)]


def parked_track() -> list[VideoPoint]:
    """Drive 0–60 s, stand 60–300 s (GPS wandering within 3 m), drive 300–360 s."""
    rng = random.Random(7)
    out = drive(60)
    lat, lon = at(600)
    for t in range(61, 300):
        dlat, dlon = at(rng.uniform(-2, 2), rng.uniform(-2, 2))
        out.append(VideoPoint(float(t), lat + dlat - LAT, lon + dlon - LON))
    return out + drive(60, start=300, x0=600)


def test_a_parked_stretch_is_cut() -> None:
    plan = plan_trim(parked_track(), keys(360), 360.0, TrimOptions())
    assert len(plan.cuts) == 1 and plan.cuts[0].reason == PARKED
    cut = plan.cuts[0]
    assert 59.0 <= cut.start_s <= 61.0 and 299.0 <= cut.end_s <= 301.0
    assert len(plan.windows) == 2
    first, second = plan.windows
    assert first.start_s == 0.0 and first.end_s == cut.start_s
    assert second.start_s == min(k for k in keys(360) if k > cut.end_s) and second.end_s == 360.0
    assert "parked (2" in plan.note()


def test_parking_shorter_than_the_limit_or_the_rule_off_is_kept() -> None:
    assert plan_trim(parked_track(), keys(360), 360.0, TrimOptions(parked_seconds=300)).whole
    assert plan_trim(parked_track(), keys(360), 360.0, TrimOptions(parked_seconds=0)).whole
    # a radius smaller than the GPS wander: the stand is not seen as one stretch
    assert plan_trim(parked_track(), keys(360), 360.0, TrimOptions(parked_radius_m=1)).whole


def test_short_stretches_and_stretches_with_too_few_points_are_dropped() -> None:
    # zones at 100 m and 240 m (20 m + 10 m margin): fixes 7–13 s and 21–27 s are within
    # 30 m, their segments 6–14 and 20–28 s, with the 1 s margins 5–15 and 19–29 s; left:
    # 0–5, 15–19 (keyframe 16) and 29–60 (keyframe 30). A 7.5 s minimum keeps the last only.
    opts = TrimOptions(
        zones=(zone(100, 20), zone(240, 20, "shop")), parked_seconds=0, min_clip_seconds=7.5
    )
    plan = plan_trim(drive(60), keys(60), 60.0, opts)
    assert len(plan.stretches) == 3
    assert windows(plan) == [(30.0, 60.0)]
    assert plan.note().endswith("2 stretches too short to upload")
    # fixes every 10 s (interpolated: gap_s 20): the zone holds the fix at 30 s, so 19–41 s
    # goes; 0–19 s holds 2 fixes and stays, 42–60 s holds 1 (50 s) and is dropped
    sparse = [p for p in drive(60) if p.time_s % 10 == 0]
    opts = TrimOptions(zones=(zone(300, 20),), parked_seconds=0, min_clip_points=2, gap_s=20)
    plan = plan_trim(sparse, keys(60), 60.0, opts)
    assert [(c.start_s, c.end_s) for c in plan.cuts] == [(19.0, 41.0)]
    assert windows(plan) == [(0.0, 19.0)]
    assert [w.points for w in plan.windows] == [2]


def test_a_video_entirely_inside_a_zone_is_refused() -> None:
    opts = TrimOptions(zones=(zone(300, 1000),))
    plan = plan_trim(drive(60), keys(60), 60.0, opts)
    assert plan.windows == ()
    refusal = plan.refusal("drive.mp4")
    assert refusal is not None and refusal.reason == "privacy_zone"
    assert refusal.message.startswith("drive.mp4: no stretch long enough to upload lies outside")
    assert 'privacy zone "home"' in refusal.message
    assert str(LAT) not in refusal.message and "48.0" not in refusal.message
    unnamed = plan_trim(drive(60), keys(60), 60.0, TrimOptions(zones=(zone(300, 1000, ""),)))
    assert "privacy zone #1" in unnamed.refusal("x.mp4").message  # type: ignore[union-attr]


def test_a_video_parked_all_along_is_refused_as_stationary() -> None:
    track = parked_track()[61:299]
    plan = plan_trim(track, keys(300), 300.0, TrimOptions(parked_seconds=60))
    refusal = plan.refusal("park.mp4")
    assert refusal is not None and refusal.reason == "stationary_video"


def test_spans_are_clipped_to_the_video() -> None:
    opts = TrimOptions(zones=(zone(0, 50),), parked_seconds=0)
    plan = plan_trim(drive(60), keys(60), 60.0, opts)
    assert plan.cuts[0].start_s == 0.0
    assert windows(plan)[0][0] > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"parked_seconds": -1.0},
        {"margin_m": math.nan},
        {"max_speed_mps": 0.0},
        {"min_clip_points": 0},
        {"gap_s": math.inf},
    ],
)
def test_options_are_checked(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrimOptions(**bad)  # type: ignore[arg-type]


# --- the promise: no kept frame can show a place inside a zone ------------------------------


def _position(
    track: Sequence[VideoPoint], times: Sequence[float], t: float
) -> tuple[float, float] | None:
    """The position at ``t`` interpolated between fixes (None outside the track)."""
    i = bisect.bisect_right(times, t)
    if i == 0 or (i == len(track) and t > times[-1]):
        return None
    if i == len(track):
        return track[-1].lat, track[-1].lon
    a, b = track[i - 1], track[i]
    f = (t - a.time_s) / (b.time_s - a.time_s)
    return a.lat + f * (b.lat - a.lat), a.lon + f * (b.lon - a.lon)


def random_track(rng: random.Random) -> list[VideoPoint]:
    """A wandering drive: 1–10 Hz fixes, turns, stops, a GPS gap now and then."""
    t, x, y, heading = rng.uniform(0, 3), 0.0, 0.0, rng.uniform(0, 2 * math.pi)
    out = []
    step = rng.choice([0.1, 0.5, 1.0])
    while t < 120:
        lat, lon = at(x, y)
        out.append(VideoPoint(t, lat, lon))
        dt = step if rng.random() > 0.02 else rng.uniform(3, 15)  # a gap
        speed = rng.choice([0.0, 5.0, 15.0, 25.0])
        heading += rng.uniform(-0.3, 0.3)
        x += math.cos(heading) * speed * dt
        y += math.sin(heading) * speed * dt
        t += dt
    return out


def test_no_kept_moment_is_inside_a_zone_on_random_drives() -> None:
    """Positions interpolated every 0.05 s inside every kept window (the path a geotagger
    would draw) are all outside every zone, on 150 seeded random drives with zones placed on
    and near the path; and the planner does keep something in most of them (so the check is
    not vacuous)."""
    rng = random.Random(20260611)
    kept_any = 0
    for _ in range(150):
        track = random_track(rng)
        zones = []
        for n in range(rng.randint(1, 3)):
            anchor = rng.choice(track)
            dx, dy = rng.uniform(-80, 80), rng.uniform(-80, 80)
            lat = anchor.lat + dy / M_PER_DEG_LAT
            lon = anchor.lon + dx / M_PER_DEG_LON
            zones.append(Zone(lat, lon, rng.uniform(5, 60), f"z{n}"))
        opts = TrimOptions(
            zones=tuple(zones), parked_seconds=0, min_clip_seconds=0, max_speed_mps=40
        )
        end = track[-1].time_s + rng.uniform(0, 5)
        plan = plan_trim(track, keys(end, 0.5), end, opts)
        kept_any += bool(plan.windows)
        times = [p.time_s for p in track]
        for w in plan.windows:
            steps = int((w.end_s - w.start_s) / 0.05)
            for i in range(steps + 1):
                where = _position(track, times, w.start_s + i * 0.05)
                if where is None:
                    continue
                for z in zones:
                    assert haversine_m(z.lat, z.lon, *where) > z.radius_m, (w, z)
        for p in track:
            if any(z.contains(p.lat, p.lon) for z in zones):
                assert not any(w.start_s <= p.time_s < w.end_s for w in plan.windows)
    assert kept_any > 100


def test_zone_spans_of_a_lone_fix() -> None:
    lat, lon = at(0)
    # inside the zone at 5 s, and nothing known of the 5 s before: all of it, plus the margin
    spans = zone_spans([VideoPoint(5.0, lat, lon)], zone(0, 10), 5.0, NO_PARK)
    assert spans == [(-1.0, 6.0)]
    spans = zone_spans([VideoPoint(0.0, lat, lon)], zone(0, 10), 0.0, NO_PARK)
    assert spans == [(-1.0, 1.0)]
    assert zone_spans([], zone(0, 10), 5.0, NO_PARK) == []
