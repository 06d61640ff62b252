"""daemon.geo.clock_offset: finding a camera's clock offset, and refusing when it is ambiguous.

Every drive here is synthetic: a track at 1 Hz, images taken along it at known true times, and
camera clocks set wrong by a known offset. "Geotagged correctly" means: the estimated offset,
applied to the camera times, puts every image within a few metres of where it really was.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from daemon.geo.clock_offset import (
    MAX_SPAN_WIDTH_S,
    Ambiguous,
    OffsetEstimate,
    describe_offset,
    estimate_offset,
)
from daemon.geo.distance import distance_m
from daemon.geo.track import Track, TrackFix, TrackPoint, apply_offsets, locate
from daemon.media.exif import read_exif_facts
from daemon.synth import destination, drive_points, exif_bytes, jpeg_bytes

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def seconds(s: float) -> timedelta:
    return timedelta(seconds=s)


def steady_track(count: int = 1200, spacing_m: float = 12.0) -> Track:
    """A drive at a constant 12 m/s along a gently curving road (synth.drive_points)."""
    pts = [
        TrackPoint(t, la, lo, alt, None)
        for t, la, lo, alt, _ in drive_points(count, start=START, spacing_m=spacing_m, seed=3)
    ]
    return Track.from_segments([pts], "steady")


def stop_and_go_track(duration_s: int = 1500, seed: int = 0) -> Track:
    """Town driving: accelerate, cruise at 8–20 m/s, stop for 5–30 s, again."""
    rng = random.Random(seed)
    lat, lon, heading, speed, target, hold = 46.05, 14.5, 30.0, 0.0, 14.0, 0
    points = []
    for i in range(duration_s):
        points.append(TrackPoint(START + seconds(i), lat, lon, 300.0, None))
        if hold > 0:
            hold, speed = hold - 1, 0.0
        else:
            if rng.random() < 0.02:
                target = 0.0
            elif target == 0.0 and speed < 0.5:
                hold, target = rng.randint(5, 30), rng.uniform(8, 20)
            speed += max(-3.0, min(2.0, target - speed))
        heading = (heading + rng.uniform(-4, 4)) % 360
        lat, lon = destination(lat, lon, heading, speed)
    return Track.from_segments([points], "stop-and-go")


def circle_track(laps: int = 2, radius_m: float = 300.0, lap2_extra_m: float = 0.0) -> Track:
    """Laps of a circle at 10 m/s; the second lap optionally runs ``lap2_extra_m`` further out."""
    period = 2 * math.pi * radius_m / 10.0
    points = []
    for i in range(int(laps * period)):
        lap = int(i // period)
        r = radius_m + (lap2_extra_m if lap >= 1 else 0.0)
        angle = 360.0 * (i % period) / period
        lat, lon = destination(46.0, 14.0, angle, r)
        points.append(TrackPoint(START + seconds(i), lat, lon, None, None))
    return Track.from_segments([points], "loop")


def where(track: Track, t: datetime) -> tuple[float, float]:
    fix = locate(track, t)
    assert isinstance(fix, TrackFix), fix
    return fix.lat, fix.lon


def worst_error_m(
    track: Track, camera: list[datetime], truth: list[datetime], offset: float
) -> float:
    """Largest distance between where the offset puts each image and where it really was."""
    shifted = apply_offsets(camera, offset_seconds=offset)
    worst = 0.0
    for t_est, t_true in zip(shifted, truth, strict=True):
        a, b = where(track, t_est), where(track, t_true)
        worst = max(worst, distance_m(a[0], a[1], b[0], b[1]))
    return worst


def timelapse(first_s: float, count: int, interval_s: float) -> list[datetime]:
    return [START + seconds(first_s + i * interval_s) for i in range(count)]


def distance_triggered(
    track: Track, first_s: float, last_s: float, every_m: float
) -> list[datetime]:
    """True times at which a camera shooting every ``every_m`` metres fired."""
    (points,) = track.segments
    cum = [0.0]
    for a, b in pairwise(points):
        cum.append(cum[-1] + distance_m(a.lat, a.lon, b.lat, b.lon))
    times = []
    k = math.ceil(cum[int(first_s)] / every_m)
    while k * every_m < cum[int(last_s)]:
        s = k * every_m
        j = next(i for i in range(1, len(cum)) if cum[i] >= s)
        w = (s - cum[j - 1]) / (cum[j] - cum[j - 1])
        times.append(points[j - 1].time + (points[j].time - points[j - 1].time) * w)
        k += 1
    return times


def camera(truth: list[datetime], offset_s: float) -> list[datetime]:
    """What a camera whose clock is ``offset_s`` behind writes (camera + offset = truth)."""
    return [t - seconds(offset_s) for t in truth]


# --- with positions ------------------------------------------------------------------------


def test_one_hour_37_seconds_with_exact_positions() -> None:
    track = steady_track()
    truth = timelapse(180.3, 360, 2.0)
    positions = [where(track, t) for t in truth]
    result = estimate_offset(camera(truth, 3637), track, image_positions=positions)
    assert isinstance(result, OffsetEstimate), result
    assert result.method == "positions"
    assert result.offset_s == pytest.approx(3637, abs=0.02)
    assert worst_error_m(track, camera(truth, 3637), truth, result.offset_s) < 0.5
    assert "1 h 0 min 37.00 s behind" in result.summary
    assert "a +01:00 zone error and +37.00 s drift" in result.summary


def test_one_hour_37_seconds_with_noisy_positions_and_outliers() -> None:
    track = stop_and_go_track()
    truth = timelapse(100.4, 600, 2.0)
    rng = random.Random(7)
    positions: list[tuple[float, float] | None] = []
    for i, t in enumerate(truth):
        lat, lon = where(track, t)
        if i % 10 == 3:  # one image in ten: a wild GPS jump of 300–2000 m
            positions.append(destination(lat, lon, rng.uniform(0, 360), rng.uniform(300, 2000)))
        elif i % 10 == 7:  # and one in ten without any position
            positions.append(None)
        else:  # phone-grade noise
            positions.append(destination(lat, lon, rng.uniform(0, 360), abs(rng.gauss(0, 5))))
    result = estimate_offset(camera(truth, 3637), track, image_positions=positions)
    assert isinstance(result, OffsetEstimate), result
    assert result.offset_s == pytest.approx(3637, abs=0.5)
    assert worst_error_m(track, camera(truth, 3637), truth, result.offset_s) < 5.0


@pytest.mark.parametrize(
    "offset_s",
    [
        5.5 * 3600 + 12,  # India +05:30, 12 s drift
        5.75 * 3600 - 8,  # Nepal +05:45, camera 8 s fast
        -9.5 * 3600 + 95,  # a camera set to Adelaide time on a UTC track
        -2 * 3600 + 12,  # camera two hours ahead
        14 * 3600,  # Kiribati
        41.0,  # only drift
    ],
)
def test_zone_errors_with_positions(offset_s: float) -> None:
    track = steady_track()
    truth = timelapse(60.7, 200, 3.0)
    positions = [where(track, t) for t in truth]
    result = estimate_offset(camera(truth, offset_s), track, image_positions=positions)
    assert isinstance(result, OffsetEstimate), result
    assert result.offset_s == pytest.approx(offset_s, abs=0.02)
    assert worst_error_m(track, camera(truth, offset_s), truth, result.offset_s) < 0.5


def test_a_loop_driven_twice_is_ambiguous() -> None:
    track = circle_track()
    truth = timelapse(20, 65, 2.0)  # images during the first lap only
    positions = [where(track, t) for t in truth]
    result = estimate_offset(camera(truth, 3637), track, image_positions=positions)
    assert isinstance(result, Ambiguous), result
    assert "two offsets fit the image positions about equally" in result.reason
    assert "a loop" in result.reason
    offsets = sorted(c[0] for c in result.candidates)
    period = 2 * math.pi * 300 / 10
    assert offsets[0] == pytest.approx(3637, abs=0.5)
    assert offsets[1] == pytest.approx(3637 + period, abs=1.5)


@pytest.mark.parametrize(
    ("lap2_extra_m", "unambiguous"),
    [(5.0, False), (10.0, False), (40.0, True), (80.0, True)],
)
def test_runner_up_margin_both_sides(lap2_extra_m: float, unambiguous: bool) -> None:
    """Second lap 5–80 m further out: the runner-up must lose by 2·best + 15 m."""
    track = circle_track(lap2_extra_m=lap2_extra_m)
    truth = timelapse(20, 65, 2.0)
    positions = [where(track, t) for t in truth]
    result = estimate_offset(camera(truth, -600), track, image_positions=positions)
    if unambiguous:
        assert isinstance(result, OffsetEstimate), result
        assert result.offset_s == pytest.approx(-600, abs=0.05)
        assert result.runner_up_fit is not None and result.runner_up_fit >= 15
    else:
        assert isinstance(result, Ambiguous), result
        assert "about equally" in result.reason


def test_images_standing_still_are_ambiguous() -> None:
    track = stop_and_go_track()
    lat, lon = where(track, START + seconds(600))
    truth = timelapse(100, 50, 5.0)
    result = estimate_offset(camera(truth, 3637), track, image_positions=[(lat, lon)] * 50)
    assert isinstance(result, Ambiguous), result


@pytest.mark.parametrize(("off_road_m", "unambiguous"), [(20.0, True), (45.0, False)])
def test_best_misfit_limit_both_sides(off_road_m: float, unambiguous: bool) -> None:
    """Image positions all shifted sideways: up to 30 m is accepted, beyond it is refused."""
    track = steady_track()
    truth = timelapse(100.2, 200, 2.0)
    positions = []
    for t in truth:
        fix = locate(track, t)
        assert isinstance(fix, TrackFix) and fix.heading is not None
        positions.append(destination(fix.lat, fix.lon, fix.heading + 90, off_road_m))
    result = estimate_offset(camera(truth, 3637), track, image_positions=positions)
    if unambiguous:
        assert isinstance(result, OffsetEstimate), result
        assert result.offset_s == pytest.approx(3637, abs=0.5)
    else:
        assert isinstance(result, Ambiguous), result
        assert "do not describe the same drive" in result.reason


def test_positions_far_from_the_track_are_refused() -> None:
    track = steady_track()
    truth = timelapse(100, 20, 2.0)
    far = [destination(*where(track, t), 90.0, 5000.0) for t in truth]
    result = estimate_offset(camera(truth, 3637), track, image_positions=far)
    assert isinstance(result, Ambiguous)
    assert "never comes within 150 m" in result.reason


# --- without positions ---------------------------------------------------------------------


def test_one_hour_37_seconds_without_positions_distance_triggered() -> None:
    """A camera shooting every 10 m through town traffic: the spacing pins the offset."""
    track = stop_and_go_track()
    truth = distance_triggered(track, 200, 1300, 10.0)
    result = estimate_offset(camera(truth, 3637), track)
    assert isinstance(result, OffsetEstimate), result
    assert result.method == "spacing"
    assert result.offset_s == pytest.approx(3637, abs=0.2)
    assert worst_error_m(track, camera(truth, 3637), truth, result.offset_s) < 3.0


@pytest.mark.parametrize(("jitter_m", "unambiguous"), [(1.0, True), (6.0, False)])
def test_spacing_limit_both_sides(jitter_m: float, unambiguous: bool) -> None:
    """Shutter jitter along the road: ±1 m on 10 m passes, ±6 m is too irregular to trust."""
    track = stop_and_go_track()
    rng = random.Random(3)
    truth = []
    for t in distance_triggered(track, 200, 1300, 10.0):
        fix = locate(track, t)
        assert isinstance(fix, TrackFix)
        speed = max(1.0, _speed(track, t))
        truth.append(t + seconds(rng.uniform(-jitter_m, jitter_m) / speed))
    truth.sort()
    result = estimate_offset(camera(truth, 3637), track)
    if unambiguous:
        assert isinstance(result, OffsetEstimate), result
        assert result.offset_s == pytest.approx(3637, abs=0.5)
    else:
        assert isinstance(result, Ambiguous), result
        assert "at no offset are the images evenly spaced" in result.reason


def _speed(track: Track, t: datetime) -> float:
    a, b = where(track, t - seconds(0.5)), where(track, t + seconds(0.5))
    return distance_m(a[0], a[1], b[0], b[1])


def test_without_positions_time_lapse_at_steady_speed_is_refused() -> None:
    """Fixed-interval shots at a constant speed: every offset in the window fits alike."""
    track = steady_track()
    truth = timelapse(180.3, 360, 2.0)
    result = estimate_offset(camera(truth, 3637), track)
    assert isinstance(result, Ambiguous), result
    assert "the images carry no positions" in result.reason
    assert "every offset from +57 min 36.70 s to +1 h 5 min 37.70 s" in result.reason
    assert "evenly spaced along the track at distinct offsets alike" in result.reason


def test_without_positions_time_lapse_in_traffic_is_refused() -> None:
    """Fixed-interval shots in stop-and-go traffic: never evenly spaced, no signal either."""
    track = stop_and_go_track()
    result = estimate_offset(camera(timelapse(200, 1000, 1.0), 3637), track)
    assert isinstance(result, Ambiguous), result
    assert "at no offset are the images evenly spaced" in result.reason
    assert "fixed time intervals" in result.reason


@pytest.mark.parametrize(("slack_s", "unambiguous"), [(1.5, True), (3.0, False)])
def test_span_window_both_sides(slack_s: float, unambiguous: bool) -> None:
    """Camera and logger switched on together: the images fill the track but for ``slack_s``."""
    track = steady_track(count=600)
    truth = timelapse(slack_s / 2, int((599 - slack_s) / 1.0) + 1, 1.0)
    assert (track.end - truth[-1]).total_seconds() + (truth[0] - track.start).total_seconds() == (
        pytest.approx(599 - (len(truth) - 1), abs=1e-6)
    )
    result = estimate_offset(camera(truth, 3637), track)
    width = 599 - (len(truth) - 1)
    if unambiguous:
        assert width <= MAX_SPAN_WIDTH_S
        assert isinstance(result, OffsetEstimate), result
        assert result.method == "span"
        assert abs(result.offset_s - 3637) <= width / 2 + 1e-6
    else:
        assert width > MAX_SPAN_WIDTH_S
        assert isinstance(result, Ambiguous), result


def test_span_window_respects_segment_gaps() -> None:
    """Two trips with the logger and camera off in between: the gaps line up only once."""
    whole = steady_track(count=1200)
    (points,) = whole.segments
    track = Track((points[:400], points[700:]), "two trips")  # parked from 400 s to 700 s
    truth = timelapse(1.0, 398, 1.0) + timelapse(701.0, 498, 1.0)
    result = estimate_offset(camera(truth, 7200 + 37), track)
    assert isinstance(result, OffsetEstimate), result
    assert result.method == "span"
    assert result.offset_s == pytest.approx(7237, abs=1.0)


def test_images_longer_than_the_track_are_refused() -> None:
    track = steady_track(count=300)
    result = estimate_offset(camera(timelapse(0, 400, 1.0), 3637), track)
    assert isinstance(result, Ambiguous)
    assert "no offset puts all 400 images on the track" in result.reason


def test_track_too_short_and_no_images() -> None:
    short = Track(((TrackPoint(START, 46.0, 14.0),),), "one point")
    result = estimate_offset(timelapse(0, 10, 1.0), short)
    assert isinstance(result, Ambiguous) and "too short" in result.reason
    result = estimate_offset([], steady_track())
    assert isinstance(result, Ambiguous) and "no images" in result.reason


def test_too_few_positions_fall_back_to_times() -> None:
    track = steady_track()
    truth = timelapse(180.3, 360, 2.0)
    positions: list[tuple[float, float] | None] = [None] * len(truth)
    positions[0], positions[1] = where(track, truth[0]), where(track, truth[1])
    result = estimate_offset(camera(truth, 3637), track, image_positions=positions)
    assert isinstance(result, Ambiguous)
    assert "the images carry no positions" in result.reason


def test_arguments_are_checked() -> None:
    track = steady_track()
    with pytest.raises(ValueError, match="positions for"):
        estimate_offset(timelapse(0, 3, 1.0), track, image_positions=[None])
    with pytest.raises(ValueError, match="timezone-aware"):
        estimate_offset([datetime(2026, 6, 1, 9, 0)], track)  # noqa: DTZ001


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (
            3637.0,
            "camera clock 1 h 0 min 37.00 s behind GPS time (offset +1 h 0 min 37.00 s: "
            "a +01:00 zone error and +37.00 s drift)",
        ),
        (
            -19792.0,
            "camera clock 5 h 29 min 52.00 s ahead of GPS time (offset -5 h 29 min "
            "52.00 s: a -05:30 zone error and +8.00 s drift)",
        ),
        (12.5, "camera clock 12.50 s behind GPS time (offset +12.50 s)"),
        (
            2000.0,
            "camera clock 33 min 20.00 s behind GPS time (offset +33 min 20.00 s: "
            "a +00:30 zone error and +3 min 20.00 s drift)",
        ),
    ],
)
def test_describe_offset(offset: float, text: str) -> None:
    assert describe_offset(offset) == text


def test_one_hour_37_seconds_through_real_jpegs(tmp_path: Path) -> None:
    """The whole chain: JPEGs whose camera clock is 1 h 37 s behind, EXIF read back, offset
    estimated from their EXIF positions, images placed on the track within a few metres."""
    track = stop_and_go_track()
    truth = timelapse(300.5, 120, 3.0)
    for i, t in enumerate(truth):
        lat, lon = where(track, t)
        exif = exif_bytes(time=t - seconds(3637), lat=lat, lon=lon, with_gps_time=False)
        (tmp_path / f"IMG_{i:04d}.jpg").write_bytes(jpeg_bytes(i, size=(32, 24), exif=exif))
    facts = [
        read_exif_facts(p.read_bytes(), p.name, default_tz=UTC)
        for p in sorted(tmp_path.glob("*.jpg"))
    ]
    times = [f.capture_time for f in facts]
    assert all(t is not None for t in times)
    camera_times = [t for t in times if t is not None]
    positions = [(f.lat, f.lon) if f.lat is not None and f.lon is not None else None for f in facts]
    result = estimate_offset(camera_times, track, image_positions=positions)
    assert isinstance(result, OffsetEstimate), result
    assert result.offset_s == pytest.approx(3637, abs=0.05)
    assert worst_error_m(track, camera_times, truth, result.offset_s) < 1.0
