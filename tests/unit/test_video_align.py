"""Placing a GPX/NMEA side track on a video's timeline (daemon/geo/video_align.py) and
finding the side file by name pattern (daemon/video_track.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import ItemError
from daemon.geo.track import Track, TrackPoint
from daemon.geo.video_align import align_side_track
from daemon.video_track import (
    VideoTrackOptions,
    expand,
    find_side_file,
    side_files,
    video_track_at,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def track(start: datetime, seconds: int, step: float = 1.0) -> Track:
    """One point a second from ``start``, moving north 0.0001° a second."""
    pts = tuple(
        TrackPoint(start + timedelta(seconds=i * step), 46.0 + i * 1e-4, 14.5, 300.0 + i)
        for i in range(seconds)
    )
    return Track((pts,), "log.gpx")


@pytest.mark.parametrize(
    ("pattern", "name", "want"),
    [
        ("%g.gpx", "CLIP0001.MP4", "CLIP0001.gpx"),
        ("%f.nmea", "CLIP0001.MP4", "CLIP0001.MP4.nmea"),
        ("gps/%g_%e.gpx", "a.b.mov", "gps/a.b_mov.gpx"),
        ("day.gpx", "CLIP0001.MP4", "day.gpx"),
        ("100%%_%g.gpx", "X.MP4", "100%_X.gpx"),
        ("%x%g", "X.MP4", "%xX"),
    ],
)
def test_pattern_expansion(pattern: str, name: str, want: str) -> None:
    assert expand(pattern, name) == want


def test_side_file_is_found_in_any_letter_case(tmp_path: Path) -> None:
    video = tmp_path / "CLIP0001.MP4"
    video.write_bytes(b"")
    assert find_side_file(video, ("%g.gpx", "%g.nmea")) is None
    (tmp_path / "CLIP0001.NMEA").write_text("")
    assert find_side_file(video, ("%g.gpx", "%g.nmea")) == tmp_path / "CLIP0001.NMEA"
    (tmp_path / "CLIP0001.gpx").write_text("")
    assert find_side_file(video, ("%g.gpx", "%g.nmea")) == tmp_path / "CLIP0001.gpx"
    assert side_files(video, ("gps/%g.gpx",)) == [tmp_path / "gps" / "CLIP0001.gpx"]


def test_creation_time_places_the_window_with_interpolated_ends() -> None:
    t = track(T0 - timedelta(seconds=30), 120)
    start = T0 + timedelta(milliseconds=500)
    got = align_side_track(
        t, "v.mp4", duration_s=10.0, video_gps_start=None, creation=start, per_video=False
    )
    assert got.anchor == "creation_time"
    assert got.start == start
    times = [p.time_s for p in got.points]
    assert times[0] == 0.0 and times[-1] == 10.0
    assert times[1:-1] == [i + 0.5 for i in range(10)]
    # The point at movie time 0 lies halfway between the fixes at +30 s and +31 s.
    assert got.points[0].lat == pytest.approx(46.0 + 30.5e-4)
    assert got.points[0].epoch_s == start.timestamp()


def test_video_gps_time_wins_over_creation_time() -> None:
    t = track(T0, 60)
    got = align_side_track(
        t,
        "v.mp4",
        duration_s=5.0,
        video_gps_start=T0 + timedelta(seconds=20),
        creation=T0 + timedelta(hours=2),  # a camera clock in the wrong zone
        per_video=True,
    )
    assert got.anchor == "video_gps"
    assert got.points[0].lat == pytest.approx(46.0 + 20e-4)
    assert len(got.points) == 6


def test_a_shared_track_not_covering_the_video_waits_for_one() -> None:
    with pytest.raises(ItemError) as info:
        align_side_track(
            track(T0, 60),
            "v.mp4",
            duration_s=10.0,
            video_gps_start=None,
            creation=T0 + timedelta(days=1),
            per_video=False,
        )
    assert info.value.reason == "outside_track"
    assert "does not cover the video" in str(info.value)


def test_a_per_video_track_is_rebased_when_the_camera_clock_is_wrong() -> None:
    got = align_side_track(
        track(T0, 60),
        "v.mp4",
        duration_s=10.0,
        video_gps_start=None,
        creation=datetime(2000, 1, 1, tzinfo=UTC),  # a dashcam never set
        per_video=True,
    )
    assert got.anchor == "rebase"
    assert [p.time_s for p in got.points] == [float(i) for i in range(11)]
    assert "rebased" in got.note


def test_no_time_at_all() -> None:
    with pytest.raises(ItemError) as info:
        align_side_track(
            track(T0, 60),
            "v.mp4",
            duration_s=10.0,
            video_gps_start=None,
            creation=None,
            per_video=False,
        )
    assert info.value.reason == "no_video_time"
    rebased = align_side_track(
        track(T0, 60), "v.mp4", duration_s=None, video_gps_start=None, creation=None, per_video=True
    )
    assert len(rebased.points) == 60


def test_a_video_with_its_own_gps_outside_the_track_is_never_rebased() -> None:
    with pytest.raises(ItemError) as info:
        align_side_track(
            track(T0, 60),
            "v.mp4",
            duration_s=10.0,
            video_gps_start=T0 + timedelta(hours=5),
            creation=None,
            per_video=True,
        )
    assert info.value.reason == "outside_track"


def test_a_video_gone_with_its_card_is_not_refused(tmp_path: Path) -> None:
    """The file vanished (card pulled): an OSError the caller waits on, not a refusal."""
    with pytest.raises(FileNotFoundError):
        video_track_at(tmp_path / "GONE.MP4", VideoTrackOptions())
