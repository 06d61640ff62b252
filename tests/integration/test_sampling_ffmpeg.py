"""daemon.media.sampling with the real ffmpeg, and side by side with mapillary_tools' sample_video.

On ../shared/corpus/video/gpmfparser__max-heromode.mp4 (GoPro MAX, 315 frames at 29.97 fps,
848×480, 191 GPS points over 10.49 s, about 13 m walked), sampled every 3 m and every 1 s:

* every frame is a complete JPEG of the video's size whose bytes outside EXIF are exactly what
  ffmpeg writes for that frame of the video (so the frame is the planned one, and its pixels
  were not re-encoded after ffmpeg);
* its EXIF, read back with ``read_image_metadata``, carries the track's position interpolated
  at the frame's time (1e-6° of the plan and of ``locate`` on the track), the UTC time (to the
  millisecond EXIF holds), altitude, heading, make and model;
* mapillary_tools 0.14.7's own ``sample_video`` (the CLI, in .venv-mt) on the same file takes
  the same frames every 3 m, at the same positions; the differences (UTC time, heading,
  interval-mode frame choice) are printed and bounded as the module docstring of
  daemon.media.sampling explains;
* ffmpeg missing (``MAPILLARY_TOOLS_FFMPEG_PATH`` pointing at no file) gives ``ffmpeg_missing``;
  a failing or timed-out ffmpeg gives ``frame_extraction_failed`` naming the video, and leaves
  no output or work directory behind.

Tests that need ffmpeg skip cleanly when it is not installed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from daemon.errors import ItemError
from daemon.geo.track import TrackFix, locate
from daemon.media import sampling
from daemon.media.exif import read_exif_facts, read_image_metadata
from daemon.media.jpeg import non_exif_bytes
from daemon.media.sampling import (
    ENV_FFMPEG,
    ENV_FFPROBE,
    FfmpegMissingError,
    FramePlan,
    VideoFrames,
    extract_frames,
    find_ffmpeg,
    plan_frames,
    probe_frames,
    require_ffmpeg,
    sample_video,
)
from daemon.media.video import VideoTrack, read_video_track

REPO = Path(__file__).resolve().parents[2]
MT_BIN = REPO / ".venv-mt" / "bin" / "mapillary_tools"
MAX = REPO.parent / "shared" / "corpus" / "video" / "gpmfparser__max-heromode.mp4"
TOOLS = find_ffmpeg()
DEG = 1e-6

needs_ffmpeg = pytest.mark.skipif(TOOLS is None, reason="ffmpeg/ffprobe not installed")
needs_video = pytest.mark.skipif(not MAX.exists(), reason=f"no corpus video at {MAX}")


def tools() -> tuple[str, str]:
    assert TOOLS is not None
    return TOOLS


@cache
def max_track() -> VideoTrack:
    return read_video_track(MAX)


@cache
def max_frames() -> VideoFrames:
    return probe_frames(MAX, ffprobe=tools()[1])


def nearest(times: tuple[float, ...], t: float) -> int:
    return min(range(len(times)), key=lambda i: (abs(times[i] - t), i))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Every frame of the video as ffmpeg writes it (JPEG quality 2), in presentation order
    (the video has a constant frame rate, so image2's default frame-rate mode neither drops nor
    repeats a frame)."""
    if TOOLS is None or not MAX.exists():
        pytest.skip("needs ffmpeg and the corpus video")
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(
        [
            *(tools()[0], "-hide_banner", "-nostdin", "-loglevel", "error"),
            *("-i", str(MAX), "-map", "0:0", "-q:v", "2", str(out / "%06d.jpg")),
        ],
        check=True,
        timeout=300,
    )
    frames = [p.read_bytes() for p in sorted(out.glob("*.jpg"))]
    assert len(frames) == len(max_frames().times) == 315
    return frames


def sample(plans: list[FramePlan], out: Path) -> list[Path]:
    track = max_track()
    ffmpeg, ffprobe = tools()
    return extract_frames(
        MAX,
        plans,
        out,
        make=track.make,
        model=track.model,
        ffmpeg=ffmpeg,
        ffprobe=ffprobe,
        frames=max_frames(),
    )


def check_frames(paths: list[Path], plans: list[FramePlan], reference: list[bytes]) -> None:
    frames, track = max_frames(), max_track()
    assert [p.name for p in paths] == [
        f"gpmfparser__max-heromode_{i:06d}.jpg" for i in range(len(plans))
    ]
    for path, plan in zip(paths, plans, strict=True):
        data = path.read_bytes()
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (frames.width, frames.height) == (848, 480)
            image.load()  # decodes completely
        assert plan.frame is not None
        assert non_exif_bytes(data) == reference[plan.frame], f"{path.name}: not frame {plan.frame}"
        meta = read_image_metadata(data, path.name, default_tz=UTC)
        fix = locate(track.track, track.start_time + timedelta(seconds=plan.time_s))
        assert isinstance(fix, TrackFix)
        for got, want in ((meta.lat, plan.lat), (meta.lon, plan.lon)):
            assert abs(got - want) <= DEG
        assert abs(meta.lat - fix.lat) <= DEG and abs(meta.lon - fix.lon) <= DEG
        assert abs((meta.capture_time - plan.time).total_seconds()) < 0.001
        assert meta.capture_time == plan.time.replace(
            microsecond=plan.time.microsecond // 1000 * 1000
        )
        assert meta.alt is not None and plan.alt is not None and abs(meta.alt - plan.alt) < 0.001
        assert meta.heading is not None and plan.heading is not None
        assert abs(meta.heading - plan.heading) < 0.001
        assert (meta.make, meta.model) == ("GoPro", "GoPro Max")


# --- our sampling --------------------------------------------------------------------------------


@needs_ffmpeg
@needs_video
def test_every_3_m(tmp_path: Path, reference: list[bytes]) -> None:
    plans = plan_frames(max_track().timed, distance_m=3.0, frame_times=max_frames().times)
    assert [p.frame for p in plans] == [0, 72, 139, 208, 282]
    paths = sample(plans, tmp_path / "frames")
    check_frames(paths, plans, reference)
    assert sorted(os.listdir(tmp_path)) == ["frames"]  # no work directory left


@needs_ffmpeg
@needs_video
def test_every_second(tmp_path: Path, reference: list[bytes]) -> None:
    plans = plan_frames(max_track().timed, interval_s=1.0, frame_times=max_frames().times)
    assert [p.frame for p in plans] == [30 * k for k in range(11)]
    paths = sample(plans, tmp_path / "frames")
    check_frames(paths, plans, reference)


@needs_ffmpeg
@needs_video
def test_plans_on_nominal_times_get_the_nearest_frame(
    tmp_path: Path, reference: list[bytes]
) -> None:
    plans = plan_frames(max_track().timed, interval_s=1.0)  # no frame times: 29.97 fps grid
    times = max_frames().times
    paths = sample(plans, tmp_path / "frames")
    for path, plan in zip(paths, plans, strict=True):
        assert non_exif_bytes(path.read_bytes()) == reference[nearest(times, plan.time_s)]


@needs_ffmpeg
@needs_video
def test_sample_video_chains_it_all_and_replaces_an_older_output(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    out.mkdir()
    (out / "stale.jpg").write_bytes(b"old")
    (tmp_path / ".frames.partial").mkdir()  # left by a crash
    (tmp_path / ".frames.partial" / "half.jpg").write_bytes(b"x")
    paths = sample_video(MAX, out, distance_m=3.0)
    assert [p.parent for p in paths] == [out] * 5
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)
    assert sorted(os.listdir(tmp_path)) == ["frames"]


@needs_ffmpeg
@needs_video
def test_no_plans_gives_an_empty_directory_without_running_ffmpeg(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert extract_frames(MAX, [], out, make=None, model=None, ffmpeg="/nonexistent/ffmpeg") == []
    assert out.is_dir() and os.listdir(out) == []


# --- failures ------------------------------------------------------------------------------------


@needs_ffmpeg
@needs_video
def test_ffmpeg_failure_names_the_video_and_quotes_ffmpeg(tmp_path: Path) -> None:
    junk = tmp_path / "broken.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4096)
    plans = plan_frames(max_track().timed, interval_s=2.0, frame_times=max_frames().times)
    with pytest.raises(ItemError) as caught:
        extract_frames(
            junk,
            plans,
            tmp_path / "out",
            make=None,
            model=None,
            ffmpeg=tools()[0],
            frames=max_frames(),
        )
    assert caught.value.reason == "frame_extraction_failed"
    message = str(caught.value)
    assert str(junk) in message and "ffmpeg failed (exit status" in message
    assert "moov atom not found" in message or "Invalid data" in message, message
    assert sorted(os.listdir(tmp_path)) == ["broken.mp4"]
    with pytest.raises(ItemError) as probed:
        probe_frames(junk, ffprobe=tools()[1])
    assert probed.value.reason == "frame_extraction_failed" and str(junk) in str(probed.value)


@needs_ffmpeg
@needs_video
def test_ffmpeg_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    plans = plan_frames(max_track().timed, interval_s=1.0, frame_times=max_frames().times)
    with pytest.raises(ItemError, match=r"timed out after 0\.01 s") as caught:
        extract_frames(
            MAX,
            plans,
            tmp_path / "out",
            make=None,
            model=None,
            ffmpeg=tools()[0],
            frames=max_frames(),
            timeout_s=0.01,
        )
    assert caught.value.reason == "frame_extraction_failed"
    assert os.listdir(tmp_path) == []


@needs_video
def test_ffmpeg_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-ffmpeg"
    monkeypatch.setenv(ENV_FFMPEG, str(missing))
    assert find_ffmpeg() is None
    with pytest.raises(FfmpegMissingError) as caught:
        require_ffmpeg()
    assert caught.value.reason == "ffmpeg_missing"
    assert f"{ENV_FFMPEG}={missing} is not an executable file" in str(caught.value)
    assert "held" in str(caught.value)
    with pytest.raises(ItemError) as sampled:  # before the video is even read
        sample_video(tmp_path / "not-even-there.mp4", tmp_path / "out")
    assert sampled.value.reason == "ffmpeg_missing"
    plans = plan_frames(max_track().timed, interval_s=5.0)
    frames = VideoFrames(0, 848, 480, tuple(p.time_s for p in plans))
    with pytest.raises(ItemError) as extracted:
        extract_frames(
            MAX, plans, tmp_path / "out", make=None, model=None, ffmpeg=str(missing), frames=frames
        )
    assert extracted.value.reason == "ffmpeg_missing"
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def _fake_tool(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_ffmpeg_honours_the_environment_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, other = tmp_path / "bin", tmp_path / "other"
    bin_dir.mkdir()
    other.mkdir()
    ffmpeg = _fake_tool(bin_dir / "ffmpeg")
    sibling = _fake_tool(bin_dir / "ffprobe")
    on_path = _fake_tool(other / "ffprobe")
    monkeypatch.setenv("PATH", str(other))
    monkeypatch.delenv(ENV_FFPROBE, raising=False)
    monkeypatch.setenv(ENV_FFMPEG, str(ffmpeg))
    assert find_ffmpeg() == (str(ffmpeg), str(sibling))  # ffprobe beside the given ffmpeg
    monkeypatch.setenv(ENV_FFPROBE, str(on_path))
    assert find_ffmpeg() == (str(ffmpeg), str(on_path))
    monkeypatch.delenv(ENV_FFMPEG)
    assert find_ffmpeg() is None  # no ffmpeg on PATH
    with pytest.raises(FfmpegMissingError, match="ffmpeg is not on PATH"):
        require_ffmpeg()
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{bin_dir}")
    assert find_ffmpeg() == (str(ffmpeg), str(on_path))


# --- side by side with mapillary_tools -----------------------------------------------------------


def run_mapillary_tools(tmp: Path, *options: str) -> list[Path]:
    """``mapillary_tools sample_video MAX OUT options``; its frames, in its order."""
    ffmpeg, ffprobe = tools()
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    out = tmp / "mt"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "TZ": "UTC",
        ENV_FFMPEG: ffmpeg,
        ENV_FFPROBE: ffprobe,
    }
    proc = subprocess.run(
        [str(MT_BIN), "sample_video", str(MAX), str(out), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted((out / MAX.name).glob("*.jpg"))


def pixels_digest(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def frame_by_pixels(reference: list[bytes]) -> dict[str, int]:
    """Decoded pixels -> frame number (mapillary_tools' piexif rewrite drops the JFIF segment,
    so its files are compared with ours by their pixels, not their bytes)."""
    table: dict[str, int] = {}
    for i, data in enumerate(reference):
        with Image.open(io.BytesIO(data)) as image:
            table.setdefault(pixels_digest(image), i)
    return table


def frame_of(path: Path, frame_by_pixels: dict[str, int]) -> int:
    """Which frame of the video a JPEG shows."""
    with Image.open(path) as image:
        return frame_by_pixels[pixels_digest(image)]


needs_mt = pytest.mark.skipif(not MT_BIN.exists(), reason=f"no mapillary_tools at {MT_BIN}")


def compare(
    title: str, ours: list[FramePlan], theirs: list[Path], frame_by_pixels: dict[str, int]
) -> list[int]:
    """Print the two samplings side by side; return the frames mapillary_tools took."""
    print(f"\n{title}: mapillary_tools took {len(theirs)} frames, we take {len(ours)}")
    print(
        "  mt frame  mt time (EXIF)                   mt heading | our frame  our time (UTC)"
        "                   our heading   Δlat°     Δlon°"
    )
    chosen = []
    for i in range(max(len(ours), len(theirs))):
        line = ""
        facts = None
        if i < len(theirs):
            facts = read_exif_facts(theirs[i].read_bytes(), theirs[i].name, default_tz=UTC)
            chosen.append(frame_of(theirs[i], frame_by_pixels))
            when = facts.capture_time.isoformat() if facts.capture_time else "-"
            heading = f"{facts.heading:10.1f}" if facts.heading is not None else f"{'-':>10s}"
            line += f"  {chosen[-1]:8d}  {when:32s} {heading}"
        if i < len(ours):
            plan = ours[i]
            line += f" | {plan.frame:9d}  {plan.time.isoformat():32s} {plan.heading or 0:11.1f}"
            if facts is not None and facts.lat is not None and facts.lon is not None:
                line += f"  {facts.lat - plan.lat:+.1e}  {facts.lon - plan.lon:+.1e}"
        print(line)
    return chosen


@pytest.mark.mapillary_tools
@needs_mt
@needs_ffmpeg
@needs_video
def test_same_frames_every_3_m_as_mapillary_tools(
    tmp_path: Path, frame_by_pixels: dict[str, int]
) -> None:
    theirs = run_mapillary_tools(tmp_path, "--video_sample_distance", "3")
    ours = plan_frames(max_track().timed, distance_m=3.0, frame_times=max_frames().times)
    chosen = compare("every 3 m", ours, theirs, frame_by_pixels)
    assert chosen == [p.frame for p in ours]  # the same frames
    for path, plan in zip(theirs, ours, strict=True):
        meta = read_image_metadata(path.read_bytes(), path.name, default_tz=UTC)
        assert abs(meta.lat - plan.lat) <= DEG and abs(meta.lon - plan.lon) <= DEG
        assert meta.alt is not None and plan.alt is not None and abs(meta.alt - plan.alt) < 0.01
        assert (meta.make, meta.model) == (max_track().make, max_track().model)
        # Time: theirs is the GPS time interpolated between points, and a GoPro GPS5 point
        # carries its sample's GPSU, so theirs is a staircase; this video's first GPSU is
        # 1.46 s behind the others, and our clock (the track's) is anchored on that first one.
        assert abs((meta.capture_time - plan.time).total_seconds()) < 2.0
        # Heading: theirs is the bearing between two raw 18 Hz fixes (noise at walking pace)
        assert meta.heading is not None and plan.heading is not None
        assert abs((meta.heading - plan.heading + 180) % 360 - 180) < 45.0


@pytest.mark.mapillary_tools
@needs_mt
@needs_ffmpeg
@needs_video
def test_every_second_compared_with_mapillary_tools(
    tmp_path: Path, frame_by_pixels: dict[str, int]
) -> None:
    theirs = run_mapillary_tools(
        tmp_path, "--video_sample_distance", "-1", "--video_sample_interval", "1"
    )
    ours = plan_frames(max_track().timed, interval_s=1.0, frame_times=max_frames().times)
    chosen = compare("every 1 s", ours, theirs, frame_by_pixels)
    assert len(theirs) == len(ours) == 11
    # ffmpeg's fps=1 filter (mapillary_tools) takes the last frame before k + 0.5 s and stamps
    # it k s; we take the frame nearest k s and stamp it with its own time.
    times = max_frames().times
    assert chosen == [max(i for i, t in enumerate(times) if t < k + 0.5) for k in range(11)]
    # Its time is ffprobe's creation_time (15:45:32, the camera's local clock written as UTC)
    # minus the stream duration (10.5105 s), plus k s; ours is the GPS clock of the track.
    camera = datetime(2019, 11, 18, 15, 45, 32, tzinfo=UTC) - timedelta(seconds=10.5105)
    for k, path in enumerate(theirs):
        facts = read_exif_facts(path.read_bytes(), path.name, default_tz=UTC)
        assert facts.lat is None  # no position: mapillary_tools geotags them in a later step
        assert facts.capture_time == camera + timedelta(seconds=k)
    assert [p.frame for p in ours] == [nearest(times, k) for k in range(11)]


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((4, 4), ["-filter_script:v", "S", "-vsync", "passthrough"]),
        ((5, 1), ["-filter_script:v", "S", "-fps_mode", "passthrough"]),
        ((6, 1), ["-filter_script:v", "S", "-fps_mode", "passthrough"]),
        ((7, 0), ["-/filter:v", "S", "-fps_mode", "passthrough"]),
        (None, ["-/filter:v", "S", "-fps_mode", "passthrough"]),  # a git build: assume recent
    ],
)
def test_options_follow_the_ffmpeg_version(
    version: tuple[int, int] | None, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sampling, "_ffmpeg_version", lambda _ffmpeg: version)
    assert sampling._version_options("ffmpeg", Path("S")) == expected
