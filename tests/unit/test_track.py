"""daemon.geo.track: locating times on a segmented track, and mapillary_tools' time offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from daemon.errors import ItemError
from daemon.geo.distance import bearing_deg
from daemon.geo.track import (
    OutsideTrack,
    Track,
    TrackFix,
    TrackPoint,
    apply_offsets,
    format_time,
    locate,
)

T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def point(
    seconds: float,
    lat: float,
    lon: float,
    alt: float | None = None,
    heading: float | None = None,
) -> TrackPoint:
    return TrackPoint(at(seconds), lat, lon, alt, heading)


# Segment A heads north then east; segment B, after a 70 s gap, heads south.
A = (point(0, 46.0, 14.0, 300.0), point(10, 46.001, 14.0, 310.0), point(20, 46.001, 14.002, None))
B = (point(90, 46.01, 14.01, 280.0), point(100, 46.009, 14.01, 290.0))
TRACK = Track((A, B), "test.gpx")

NORTH = bearing_deg(46.0, 14.0, 46.001, 14.0)
EAST = bearing_deg(46.001, 14.0, 46.001, 14.002)
SOUTH = bearing_deg(46.01, 14.01, 46.009, 14.01)

# (case, seconds from T0, expected (lat, lon, alt, heading, segment, snapped_s) or outside kind)
Expected = tuple[float, float, float | None, float | None, int, float] | str
TABLE: list[tuple[str, float, Expected]] = [
    ("exact first point", 0.0, (46.0, 14.0, 300.0, NORTH, 0, 0.0)),
    ("a quarter into the first pair", 2.5, (46.00025, 14.0, 302.5, NORTH, 0, 0.0)),
    # mapillary_tools: bisect_left picks the pair *ending* at an exact hit
    ("exact middle point", 10.0, (46.001, 14.0, 310.0, NORTH, 0, 0.0)),
    ("just after the middle point", 10.000001, (46.001, 14.0000000002, None, EAST, 0, 0.0)),
    ("halfway, altitude missing on one side", 15.0, (46.001, 14.001, None, EAST, 0, 0.0)),
    ("exact last point of segment A", 20.0, (46.001, 14.002, None, EAST, 0, 0.0)),
    ("gap: within tolerance after A", 20.0009, (46.001, 14.002, None, EAST, 0, 0.0009)),
    ("gap: tolerance edge after A", 20.001, (46.001, 14.002, None, EAST, 0, 0.001)),
    ("gap: just beyond tolerance after A", 20.0011, "gap"),
    ("gap: middle", 55.0, "gap"),
    ("gap: just beyond tolerance before B", 89.9989, "gap"),
    ("gap: within tolerance before B", 89.9995, (46.01, 14.01, 280.0, SOUTH, 1, -0.0005)),
    # at B's first point the heading is B's own, never the bearing across the gap from A
    ("exact first point of segment B", 90.0, (46.01, 14.01, 280.0, SOUTH, 1, 0.0)),
    ("halfway in segment B", 95.0, (46.0095, 14.01, 285.0, SOUTH, 1, 0.0)),
    ("exact last point", 100.0, (46.009, 14.01, 290.0, SOUTH, 1, 0.0)),
    ("after the end within tolerance", 100.001, (46.009, 14.01, 290.0, SOUTH, 1, 0.001)),
    ("after the end beyond tolerance", 100.0011, "after"),
    ("before the start within tolerance", -0.001, (46.0, 14.0, 300.0, NORTH, 0, -0.001)),
    ("before the start beyond tolerance", -0.0011, "before"),
    ("long before the start", -3600.0, "before"),
]


@pytest.mark.parametrize(("case", "seconds", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_locate_table(
    case: str,
    seconds: float,
    expected: Expected,
) -> None:
    result = locate(TRACK, at(seconds))
    if isinstance(expected, str):
        assert isinstance(result, OutsideTrack), case
        assert result.kind == expected
        return
    assert isinstance(result, TrackFix), result
    lat, lon, alt, heading, segment, snapped = expected
    assert result.lat == pytest.approx(lat, abs=1e-9)
    assert result.lon == pytest.approx(lon, abs=1e-9)
    assert result.alt == (None if alt is None else pytest.approx(alt))
    assert result.heading == (None if heading is None else pytest.approx(heading, abs=1e-9))
    assert result.segment == segment
    assert result.snapped_s == pytest.approx(snapped, abs=1e-9)
    assert result.time == at(seconds)


def test_gap_is_not_interpolated_across_and_says_why() -> None:
    result = locate(TRACK, at(55))
    assert isinstance(result, OutsideTrack)
    assert result.code == "in_track_gap"
    assert result.gap_start == at(20) and result.gap_end == at(90)
    assert result.delta_s == pytest.approx(35.0)
    text = result.message
    assert format_time(at(55)) in text  # the image time
    assert "2026-06-01T09:00:00.000Z" in text and "2026-06-01T09:01:40.000Z" in text  # span
    assert "gap between track segments" in text and "test.gpx" in text
    error = result.to_error()
    assert isinstance(error, ItemError) and error.reason == "in_track_gap"


def test_outside_reason_states_image_time_and_track_span() -> None:
    result = locate(TRACK, at(-90.5))
    assert isinstance(result, OutsideTrack)
    assert result.code == "outside_track" and result.kind == "before"
    assert result.delta_s == pytest.approx(90.5)
    assert result.message.startswith("image time 2026-06-01T08:58:29.500Z is 1 min 30.5 s before")
    assert "the track spans 2026-06-01T09:00:00.000Z to 2026-06-01T09:01:40.000Z" in result.message
    after = locate(TRACK, at(160))
    assert isinstance(after, OutsideTrack) and after.kind == "after"
    assert "1 min 0.0 s after the track ends" in after.message


def test_tolerance_is_a_parameter() -> None:
    # 10 s into the 70 s gap: outside with the default, snapped with a 15 s tolerance
    assert isinstance(locate(TRACK, at(30)), OutsideTrack)
    fix = locate(TRACK, at(30), tolerance_s=15)
    assert isinstance(fix, TrackFix) and (fix.lat, fix.lon) == (46.001, 14.002)
    assert fix.snapped_s == pytest.approx(10)
    # nearer to B's start: snaps there
    fix = locate(TRACK, at(80), tolerance_s=15)
    assert isinstance(fix, TrackFix) and (fix.lat, fix.lon, fix.segment) == (46.01, 14.01, 1)
    with pytest.raises(ValueError, match="tolerance_s"):
        locate(TRACK, at(0), tolerance_s=-1)


HEADING_TABLE = [
    (350.0, 10.0, 0.5, 0.0),
    (350.0, 10.0, 0.25, 355.0),
    (350.0, 10.0, 0.75, 5.0),
    (10.0, 350.0, 0.5, 0.0),
    (179.0, 181.0, 0.5, 180.0),
    (0.0, 90.0, 0.5, 45.0),
    (270.0, 0.0, 0.5, 315.0),
    (359.0, 1.0, 1.0, 1.0),
    (359.0, 1.0, 0.0, 359.0),
]


@pytest.mark.parametrize(("h1", "h2", "w", "expected"), HEADING_TABLE)
def test_carried_headings_interpolate_across_north(
    h1: float, h2: float, w: float, expected: float
) -> None:
    track = Track(((point(0, 46.0, 14.0, heading=h1), point(10, 46.0, 14.001, heading=h2)),), "h")
    fix = locate(track, at(10 * w))
    assert isinstance(fix, TrackFix)
    assert fix.heading is not None
    assert min(abs(fix.heading - expected), 360 - abs(fix.heading - expected)) < 1e-9
    assert 0.0 <= fix.heading < 360.0


def test_headings_a_hair_below_north_wrap_to_zero_not_360() -> None:
    assert -1e-17 % 360.0 == 360.0  # the floating-point trap
    assert point(0, 46.0, 14.0, heading=-1e-17).heading == 0.0
    track = Track(((point(0, 46.0, 14.0, heading=0.0), point(1, 46.0, 14.0, heading=350.0)),), "n")
    fix = locate(track, T0 + timedelta(microseconds=1))  # w = 1e-6: 0 - 1e-5 degrees
    assert isinstance(fix, TrackFix) and fix.heading is not None and 0 <= fix.heading < 360


def test_heading_from_bearing_when_points_carry_none_and_none_when_coincident() -> None:
    moving = Track(((point(0, 46.0, 14.0), point(10, 45.999, 13.999)),), "m")
    fix = locate(moving, at(5))
    assert isinstance(fix, TrackFix)
    assert fix.heading == pytest.approx(bearing_deg(46.0, 14.0, 45.999, 13.999))
    parked = Track(((point(0, 46.0, 14.0), point(10, 46.0, 14.0)),), "p")
    fix = locate(parked, at(5))
    assert isinstance(fix, TrackFix) and fix.heading is None
    single = Track(((point(0, 46.0, 14.0, 5.0, heading=123.0),),), "one")
    fix = locate(single, at(0))
    assert isinstance(fix, TrackFix) and (fix.lat, fix.alt, fix.heading) == (46.0, 5.0, 123.0)


def test_duplicate_times_take_the_first_point_like_mapillary_tools() -> None:
    track = Track(
        ((point(0, 46.0, 14.0), point(10, 46.001, 14.0), point(10, 46.002, 14.0)),), "dup"
    )
    fix = locate(track, at(10))
    assert isinstance(fix, TrackFix) and fix.lat == pytest.approx(46.001)


def test_longitude_interpolates_across_the_antimeridian() -> None:
    track = Track(((point(0, -17.0, 179.9), point(10, -17.0, -179.9)),), "fiji")
    fix = locate(track, at(5))
    assert isinstance(fix, TrackFix)
    assert abs(fix.lon) == pytest.approx(180.0)
    fix = locate(track, at(7.5))
    assert isinstance(fix, TrackFix) and fix.lon == pytest.approx(-179.95)


def test_overlapping_segments_use_the_latest_started() -> None:
    first = (point(0, 46.0, 14.0), point(100, 46.1, 14.0))
    second = (point(50, 47.0, 15.0), point(60, 47.0, 15.01))
    track = Track((first, second), "two loggers")
    fix = locate(track, at(55))
    assert isinstance(fix, TrackFix) and fix.segment == 1
    fix = locate(track, at(70))  # after the second ended, still inside the first
    assert isinstance(fix, TrackFix) and fix.segment == 0
    assert fix.lat == pytest.approx(46.07)
    assert track.end == at(100)


def test_times_are_compared_in_utc_and_naive_times_are_refused() -> None:
    plus2 = timezone(timedelta(hours=2))
    fix = locate(TRACK, datetime(2026, 6, 1, 11, 0, 5, tzinfo=plus2))
    assert isinstance(fix, TrackFix) and fix.lat == pytest.approx(46.0005)
    assert fix.time.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        locate(TRACK, datetime(2026, 6, 1, 9, 0, 5))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        TrackPoint(datetime(2026, 6, 1, 9, 0, 5), 1.0, 2.0)  # noqa: DTZ001


def test_track_invariants() -> None:
    with pytest.raises(ValueError, match="at least one point"):
        Track((), "x")
    with pytest.raises(ValueError, match="empty"):
        Track(((),), "x")
    with pytest.raises(ValueError, match="not sorted"):
        Track(((point(10, 0, 0), point(0, 0, 0)),), "x")
    with pytest.raises(ValueError, match="ordered by start"):
        Track(((point(10, 0, 0),), (point(0, 0, 0),)), "x")
    with pytest.raises(ValueError, match="latitude"):
        point(0, 91.0, 0.0)
    built = Track.from_segments([[point(10, 0, 0), point(0, 1, 1)], [], [point(-5, 2, 2)]], "x")
    assert [[p.lat for p in s] for s in built.segments] == [[2.0], [1.0, 0.0]]
    assert built.start == at(-5) and built.end == at(10) and built.point_count == 3


def test_apply_offsets_like_mapillary_tools() -> None:
    # mapillary_tools' own example: images [1002, 1004, 1008, 1010], GPX starts at 1005
    images = [at(1004), at(1002), at(1010), at(1008)]
    gpx = Track(((point(1005, 0, 0), point(1009, 0, 0)),), "g")
    shifted = apply_offsets(images, use_gps_start_time=True, track=gpx)
    assert shifted == [at(1007), at(1005), at(1013), at(1011)]  # order kept
    both = apply_offsets(images, offset_seconds=-2.5, use_gps_start_time=True, track=gpx)
    assert both == [at(1004.5), at(1002.5), at(1010.5), at(1008.5)]
    assert apply_offsets(images, offset_seconds=3637) == [
        t + timedelta(seconds=3637) for t in images
    ]
    assert apply_offsets([], use_gps_start_time=True, track=gpx) == []
    with pytest.raises(ValueError, match="needs the track"):
        apply_offsets(images, use_gps_start_time=True)
    with pytest.raises(ValueError, match="finite"):
        apply_offsets(images, offset_seconds=float("nan"))
