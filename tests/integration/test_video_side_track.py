"""A dashcam without GPS of its own and a GPS logger beside it (issue #4: "GPX/NMEA side files
by name pattern for cameras without embedded GPS").

The video is made here by ffmpeg (a test pattern, no telemetry, a creation time); the GPX side
file is written by the test. Through the running daemon it becomes one ``mly_camm_video``
cluster whose CAMM track, read back from the bytes the sandbox received, is the logger's
points over the video's ten seconds; a side file that arrives after the video still gets it
uploaded.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.media.camm import camm_track
from daemon.sandbox import Sandbox
from tests.e2e.harness import wait_until
from tests.integration.test_service import TOKEN, counts, running, status

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")

CREATED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def make_video(path: Path) -> None:
    """Ten seconds of ffmpeg's test pattern at 10 fps, no GPS, created at ``CREATED``."""
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", "testsrc=size=320x240:rate=10", "-t", "10",
            "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-metadata", f"creation_time={CREATED:%Y-%m-%dT%H:%M:%SZ}",
            str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip


def logger_points() -> list[tuple[datetime, float, float]]:
    """A logger's fixes every second from 30 s before the video to 30 s after, driving north
    at about 11 m/s."""
    start = CREATED - timedelta(seconds=30)
    return [(start + timedelta(seconds=i), 46.05 + i * 1e-4, 14.5 + i * 2e-5) for i in range(71)]


def write_gpx(path: Path) -> None:
    rows = "\n".join(
        f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>300</ele>'
        f"<time>{t:%Y-%m-%dT%H:%M:%SZ}</time></trkpt>"
        for t, lat, lon in logger_points()
    )
    path.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="test" '
        'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        f"{rows}</trkseg></trk></gpx>",
        encoding="utf-8",
    )


def config(tmp_path: Path, sandbox: Sandbox, extra: str = "") -> Path:
    card = tmp_path / "card"
    card.mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp_path / "state"}"
[[watch]]
path = "{card}"
{extra}
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[scan]
interval_seconds = 60
""",
        encoding="utf-8",
    )
    return path


def uploaded_track(sandbox: Sandbox) -> list[tuple[float, float, float]]:
    [cluster] = sandbox.clusters()
    assert cluster["file_type"] == "mly_camm_video"
    key = cluster["session_key"]
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/sessions/{key}", timeout=30) as r:
        telemetry = camm_track(io.BytesIO(r.read()), key)
    assert telemetry is not None and telemetry.timed is not None
    return [(p.time_s, p.lat, p.lon) for p in telemetry.timed.points]


def expected_track() -> list[tuple[float, float, float]]:
    return [
        ((t - CREATED).total_seconds(), lat, lon)
        for t, lat, lon in logger_points()
        if CREATED <= t <= CREATED + timedelta(seconds=10)
    ]


def assert_same(got: list[tuple[float, float, float]], want: list[tuple[float, float, float]]):
    assert len(got) == len(want) == 11
    for (ta, la, oa), (tb, lb, ob) in zip(got, want, strict=True):
        assert abs(ta - tb) < 1e-3 and abs(la - lb) < 1e-6 and abs(oa - ob) < 1e-6


def test_a_video_without_gps_takes_the_track_named_after_it(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    cfg = load_config(config(tmp_path, sandbox), env={"MAPILLARY_TOKEN": TOKEN})
    staging = tmp_path / "staging"
    staging.mkdir()
    make_video(staging / "CLIP0001.MP4")
    write_gpx(staging / "CLIP0001.GPX")  # FAT cards shout: any letter case matches %g.gpx
    with running(cfg):
        for name in ("CLIP0001.GPX", "CLIP0001.MP4"):
            shutil.copy(staging / name, tmp_path / "card" / name)
        wait_until(lambda: counts(cfg)["done"] == 1, 120, "the video to be uploaded")
    assert_same(uploaded_track(sandbox), expected_track())


def test_a_side_track_arriving_later_releases_the_video(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = load_config(config(tmp_path, sandbox), env={"MAPILLARY_TOKEN": TOKEN})
    staging = tmp_path / "staging"
    staging.mkdir()
    make_video(staging / "CLIP0002.MP4")
    write_gpx(staging / "CLIP0002.gpx")
    with running(cfg):
        shutil.copy(staging / "CLIP0002.MP4", tmp_path / "card" / "CLIP0002.MP4")
        wait_until(lambda: counts(cfg)["rejected"] == 1, 60, "the video refused: no GPS yet")
        [row] = status(cfg)["not_uploaded"]
        assert row["reason"] == "no_video_gps"
        assert "CLIP0002.gpx" in row["detail"]  # says what it looked for
        assert sandbox.clusters() == []
        shutil.copy(staging / "CLIP0002.gpx", tmp_path / "card" / "CLIP0002.gpx")
        wait_until(lambda: counts(cfg)["done"] == 1, 120, "the video uploaded with its track")
    assert_same(uploaded_track(sandbox), expected_track())


def test_a_shared_logger_track_in_local_camera_time(tmp_path: Path, sandbox: Sandbox) -> None:
    """``video_geotag_source = "gpx"`` with one track for the whole day, and a camera that
    writes its creation time in local time (UTC+2): the video is placed by that time read in
    the watch's zone."""
    extra = """time_zone = "Europe/Ljubljana"
video_geotag_source = "gpx"
video_geotag_source_path = "../logger/day.gpx"
video_creation_time = "local"
"""
    cfg = load_config(config(tmp_path, sandbox, extra), env={"MAPILLARY_TOKEN": TOKEN})
    (tmp_path / "logger").mkdir()
    write_gpx(tmp_path / "logger" / "day.gpx")
    staging = tmp_path / "staging"
    staging.mkdir()
    global CREATED
    utc = CREATED
    try:
        CREATED = utc + timedelta(hours=2)  # what the camera writes: 12:00 "UTC" for 12:00 CEST
        make_video(staging / "CLIP0003.MP4")
    finally:
        CREATED = utc
    with running(cfg):
        shutil.copy(staging / "CLIP0003.MP4", tmp_path / "card" / "CLIP0003.MP4")
        wait_until(lambda: counts(cfg)["done"] == 1, 120, "the video to be uploaded")
    assert_same(uploaded_track(sandbox), expected_track())
