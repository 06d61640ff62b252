"""daemon.media.sampling, pure planning: which frames of a video become images, and their tags.

Tracks are built here from straight lines and turns (``daemon.synth.destination``); frame times
are a 29.97 fps grid unless a test says otherwise. Nothing runs ffmpeg (see
tests/integration/test_sampling_ffmpeg.py for that, and the comparison with mapillary_tools).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from pathlib import Path

import pytest

from daemon.geo.distance import bearing_deg, distance_m
from daemon.media.mp4 import TimedPoint, TimedTrack, timed_track
from daemon.media.sampling import (
    NOMINAL_FRAME_S,
    FramePlan,
    frame_name,
    plan_frames,
    select_expression,
)
from daemon.synth import destination

EPOCH0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC).timestamp()
FPS = 30000 / 1001
LAT0, LON0 = 46.0569, 14.5058


def frame_grid(duration_s: float, fps: float = FPS) -> list[float]:
    return [i / fps for i in range(math.floor(duration_s * fps) + 1)]


class Drive:
    """Builds a track leg by leg: drive(bearing, speed, seconds), park(seconds, jitter_m)."""

    def __init__(self, hz: float = 10.0, t0: float = 0.0) -> None:
        self.hz = hz
        self.t = t0
        self.lat, self.lon = LAT0, LON0
        self.points: list[TimedPoint] = [self._point(self.lat, self.lon)]
        self.rng = random.Random(7)

    def _point(self, lat: float, lon: float) -> TimedPoint:
        return TimedPoint(self.t, lat, lon, 300.0, EPOCH0 + self.t, None)

    def drive(self, bearing: float, speed: float, seconds: float) -> Drive:
        for _ in range(round(seconds * self.hz)):
            self.t += 1 / self.hz
            self.lat, self.lon = destination(self.lat, self.lon, bearing, speed / self.hz)
            self.points.append(self._point(self.lat, self.lon))
        return self

    def park(self, seconds: float, jitter_m: float = 0.0) -> Drive:
        for _ in range(round(seconds * self.hz)):
            self.t += 1 / self.hz
            lat, lon = self.lat, self.lon
            if jitter_m:
                lat, lon = destination(lat, lon, self.rng.uniform(0, 360), jitter_m)
            self.points.append(self._point(lat, lon))
        return self

    def timed(self) -> TimedTrack:
        return timed_track(self.points, "drive.mp4", movie_creation=None)


def gaps(plans: list[FramePlan]) -> list[float]:
    return [distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(plans)]


# --- distance mode -------------------------------------------------------------------------------


def test_distance_mode_takes_a_frame_each_time_the_camera_is_3_m_further() -> None:
    timed = Drive().drive(45.0, 10.0, 20.0).timed()
    plans = plan_frames(timed, frame_times=frame_grid(20.0))
    step = 10.0 * NOMINAL_FRAME_S  # metres between two consecutive video frames
    assert plans[0].time_s == 0.0 and plans[0].frame == 0
    assert all(3.0 < gap <= 3.0 + step + 1e-6 for gap in gaps(plans)), gaps(plans)
    # over 200 m: one frame per 3 m "and a bit" (the first video frame past 3 m)
    assert 200 / (3.0 + step) <= len(plans) - 1 <= 200 / 3.0
    assert [p.index for p in plans] == list(range(len(plans)))
    assert all(a.time_s < b.time_s for a, b in pairwise(plans))


def test_distance_mode_threshold_is_strict_and_zero_takes_every_moving_frame() -> None:
    timed = Drive().drive(0.0, 5.0, 4.0).park(2.0).timed()
    every = plan_frames(timed, distance_m=0.0, frame_times=frame_grid(6.0))
    grid = frame_grid(6.0)
    # every frame up to the stop at 4 s, and the first one after it (it is still further on than
    # the one before); then the car stands still: 0 m is not more than 0 m
    moving = [t for t in grid if t <= 4.0] + [min(t for t in grid if t > 4.0)]
    assert [p.time_s for p in every] == moving
    big = plan_frames(timed, distance_m=1000.0, frame_times=frame_grid(6.0))
    assert [p.time_s for p in big] == [0.0]


def test_a_parked_car_yields_no_frames() -> None:
    # 10 s at 10 m/s, 120 s parked with exact repeats of the position, 10 s at 10 m/s
    timed = Drive().drive(90.0, 10.0, 10.0).park(120.0).drive(90.0, 10.0, 10.0).timed()
    plans = plan_frames(timed, frame_times=frame_grid(140.0))
    parked = [p for p in plans if 10.0 < p.time_s <= 130.0]
    assert parked == []
    after = [p for p in plans if p.time_s > 130.0]
    assert after and after[0].time_s < 130.0 + 0.5  # moving again: frames within 3-ish m


def test_gps_jitter_while_parked_does_not_add_frames() -> None:
    """A parked GPS wanders: summed along the track, 120 s of 1 m jitter at 10 Hz is over a
    kilometre (an along-track rule would take ~400 frames); the displacement from the last
    image stays within 2 m of the spot, so at most one frame falls in the parked stretch."""
    drive = Drive().drive(90.0, 10.0, 10.0).park(120.0, jitter_m=1.0).drive(90.0, 10.0, 10.0)
    timed = drive.timed()
    parked_points = [p for p in timed.points if 10.0 < p.time_s <= 130.0]
    wander = sum(distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(parked_points))
    assert wander > 1000.0
    plans = plan_frames(timed, frame_times=frame_grid(140.0))
    assert len([p for p in plans if 10.0 < p.time_s <= 130.0]) <= 1


def test_without_frame_times_a_nominal_29_97_fps_grid_is_used() -> None:
    timed = Drive().drive(45.0, 10.0, 5.0).timed()
    nominal = plan_frames(timed)
    grid = [i * NOMINAL_FRAME_S for i in range(151)]  # 0 .. 5.005 s
    on_grid = plan_frames(timed, frame_times=grid)
    assert len(nominal) > 5
    assert [(p.time_s, p.lat, p.lon, p.heading) for p in nominal] == [
        (p.time_s, p.lat, p.lon, p.heading) for p in on_grid
    ]
    assert all(p.frame is None for p in nominal)
    assert all(p.frame is not None for p in on_grid)


def test_frames_outside_the_track_are_not_planned() -> None:
    # GPS from 2 s to 8 s of a 10 s video (a late fix, an early stop)
    timed = Drive(t0=2.0).drive(0.0, 10.0, 6.0).timed()
    for mode in ({"distance_m": 3.0}, {"interval_s": 1.0}, {"distance_m": 0.0}):
        plans = plan_frames(timed, frame_times=frame_grid(10.0), **mode)  # type: ignore[arg-type]
        assert plans, mode
        assert all(2.0 - 0.001 <= p.time_s <= 8.0 + 0.001 for p in plans), mode


def test_frame_times_are_sorted_and_deduplicated_and_frame_indexes_them() -> None:
    timed = Drive().drive(0.0, 10.0, 3.0).timed()
    grid = frame_grid(3.0)
    shuffled = grid[::-1] + grid[:5]
    plans = plan_frames(timed, frame_times=shuffled)
    assert plans == plan_frames(timed, frame_times=grid)
    assert all(grid[p.frame] == p.time_s for p in plans if p.frame is not None)
    with pytest.raises(ValueError, match="finite"):
        plan_frames(timed, frame_times=[0.0, math.nan])


# --- interval mode -------------------------------------------------------------------------------


def test_interval_mode_takes_the_frame_nearest_each_multiple() -> None:
    timed = Drive().drive(0.0, 1.0, 10.5).timed()
    grid = frame_grid(10.5)
    plans = plan_frames(timed, interval_s=1.0, frame_times=grid)
    assert len(plans) == 11
    for k, plan in enumerate(plans):
        distances = [(abs(t - k), i) for i, t in enumerate(grid)]
        nearest = min(distances)[1]
        assert plan.frame == nearest and plan.time_s == grid[nearest]
    # 29.97 fps: 1 s is nearest frame 30 (1.001 s), 2 s frame 60 (2.002 s) ...
    assert [p.frame for p in plans[:3]] == [0, 30, 60]


def test_interval_mode_keeps_stationary_stretches_and_ignores_distance() -> None:
    timed = Drive().drive(90.0, 10.0, 5.0).park(20.0).timed()
    plans = plan_frames(timed, distance_m=3.0, interval_s=2.0, frame_times=frame_grid(25.0))
    assert len(plans) == 13  # 0, 2, ... 24 s: parked or not
    parked = [p for p in plans if p.time_s > 5.5]
    assert len({(p.lat, p.lon) for p in parked}) == 1
    # no heading can be measured while parked: they keep the heading they arrived with
    assert all(p.heading is not None and abs(p.heading - 90.0) < 0.5 for p in parked)


def test_interval_shorter_than_a_frame_takes_each_frame_once() -> None:
    timed = Drive().drive(0.0, 10.0, 2.0).timed()
    grid = frame_grid(2.0)
    plans = plan_frames(timed, interval_s=0.001, frame_times=grid)
    assert [p.frame for p in plans] == list(range(len(grid)))


def test_interval_mode_without_frame_times_takes_the_nearest_nominal_frame() -> None:
    timed = Drive().drive(0.0, 10.0, 3.0).timed()  # GPS from 0 to 3.0 s
    plans = plan_frames(timed, interval_s=1.0)
    # frames 0, 30, 60 of the grid, then 89 (2.9696 s: frame 90 at 3.003 s is past the track)
    expected = [i * NOMINAL_FRAME_S for i in (0, 30, 60, 89)]
    assert [p.time_s for p in plans] == pytest.approx(expected, abs=1e-12)


# --- headings ------------------------------------------------------------------------------------


def test_headings_follow_the_direction_of_travel() -> None:
    timed = Drive().drive(0.0, 10.0, 10.0).drive(90.0, 10.0, 10.0).timed()
    plans = plan_frames(timed, frame_times=frame_grid(20.0))
    north = [p for p in plans if p.time_s < 9.5]
    east = [p for p in plans if p.time_s > 10.5]
    assert all(p.heading is not None for p in plans)
    assert all(min(p.heading, 360 - p.heading) < 0.5 for p in north if p.heading is not None)
    assert all(abs(p.heading - 90.0) < 0.5 for p in east if p.heading is not None)
    turn = [p for p in plans if 9.7 < p.time_s < 10.3]
    assert all(p.heading is not None and 0.0 < p.heading < 90.0 for p in turn)


def test_headings_are_smoothed_over_gps_noise() -> None:
    """Noisy 18 Hz fixes at walking pace: the bearing between two neighbouring raw points
    (mapillary_tools' heading) swings wildly; the heading over 2 m each side stays close."""
    drive = Drive(hz=18.0)
    rng = random.Random(3)
    for _ in range(18 * 20):
        drive.drive(135.0, 1.2, 1 / 18)
        lat, lon = destination(drive.lat, drive.lon, rng.uniform(0, 360), 0.15)
        last = drive.points[-1]
        drive.points[-1] = TimedPoint(last.time_s, lat, lon, last.alt, last.epoch_s)

    def off(bearing: float) -> float:
        return abs((bearing - 135.0 + 180) % 360 - 180)

    raw = [off(bearing_deg(a.lat, a.lon, b.lat, b.lon)) for a, b in pairwise(drive.points)]
    assert sum(raw) / len(raw) > 30.0  # point-to-point bearings: mostly noise
    plans = plan_frames(drive.timed(), frame_times=frame_grid(20.0))
    assert len(plans) >= 6
    for p in plans:
        assert p.heading is not None
        assert off(p.heading) < 10.0, p


def test_a_single_point_track_gives_one_frame_without_heading() -> None:
    timed = timed_track(
        [TimedPoint(0.0, LAT0, LON0, None, None)],
        "phone.mov",
        movie_creation=datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
    )
    plans = plan_frames(timed, frame_times=frame_grid(5.0))
    assert [(p.time_s, p.lat, p.lon, p.alt, p.heading) for p in plans] == [
        (0.0, LAT0, LON0, None, None)
    ]


# --- times and arguments -------------------------------------------------------------------------


def test_utc_time_is_the_tracks_clock_or_the_given_start_time() -> None:
    timed = Drive().drive(0.0, 10.0, 5.0).timed()
    assert timed.start_time == datetime.fromtimestamp(EPOCH0, UTC)
    plans = plan_frames(timed, frame_times=frame_grid(5.0))
    for p in plans:
        assert p.time == timed.start_time + timedelta(seconds=p.time_s)
        assert p.time.tzinfo is not None
    given = datetime(2026, 6, 1, 11, 0, tzinfo=timezone(timedelta(hours=2)))
    moved = plan_frames(timed, frame_times=frame_grid(5.0), start_time=given)
    assert [p.time - timedelta(seconds=p.time_s) for p in moved] == [given] * len(moved)
    assert moved[0].time.utcoffset() == timedelta(0)
    # the positions stay tied to the video's own timeline
    assert [(p.lat, p.lon) for p in moved] == [(p.lat, p.lon) for p in plans]


def test_position_is_the_track_interpolated_at_the_frame_time() -> None:
    timed = Drive(hz=1.0).drive(30.0, 10.0, 10.0).timed()
    plans = plan_frames(timed, distance_m=0.0, frame_times=frame_grid(10.0))
    for p in plans:
        i = max(j for j, q in enumerate(timed.points) if q.time_s <= p.time_s)
        a, b = timed.points[i], timed.points[min(i + 1, len(timed.points) - 1)]
        w = 0.0 if b.time_s == a.time_s else (p.time_s - a.time_s) / (b.time_s - a.time_s)
        assert p.lat == pytest.approx(a.lat + (b.lat - a.lat) * w, abs=1e-9)
        assert p.lon == pytest.approx(a.lon + (b.lon - a.lon) * w, abs=1e-9)
        assert p.alt == pytest.approx(300.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distance_m": -1.0}, "distance_m"),
        ({"distance_m": math.nan}, "distance_m"),
        ({"distance_m": None}, "give distance_m"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"interval_s": -2.0}, "interval_s"),
        ({"interval_s": math.inf}, "interval_s"),
        ({"start_time": datetime(2026, 6, 1, 9, 0)}, "timezone-aware"),  # noqa: DTZ001
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    timed = Drive().drive(0.0, 10.0, 1.0).timed()
    with pytest.raises(ValueError, match=message):
        plan_frames(timed, **kwargs)  # type: ignore[arg-type]


def test_frame_names_are_stable() -> None:
    assert frame_name(Path("/cards/GX010042.MP4"), 7) == "GX010042_000007.jpg"
    assert frame_name(Path("drive.mp4"), 123456) == "drive_123456.jpg"


# --- the ffmpeg select expression (built here, run in the integration test) ---------------------


def _evaluator(expression: str) -> Callable[[float], bool]:
    """Evaluate an ffmpeg select expression of if/lt/abs for a frame time t (test only)."""
    python = expression.replace("\\,", ",")
    assert re.fullmatch(r"[0-9a-z().,\-+e]*", python), python
    python = python.replace("if(", "_if(")

    def _if(c: float, a: float, b: float) -> float:
        return a if c else b

    def run(t: float) -> bool:
        env = {"_if": _if, "lt": lambda x, y: float(x < y), "abs": abs, "t": t}
        return bool(eval(python, {"__builtins__": {}}, env))

    return run


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 64])
def test_select_expression_matches_exactly_the_targets(count: int) -> None:
    grid = frame_grid(10.0)
    targets = sorted(random.Random(count).sample(grid, count))
    run = _evaluator(select_expression(targets))
    assert [t for t in grid if run(t)] == targets
