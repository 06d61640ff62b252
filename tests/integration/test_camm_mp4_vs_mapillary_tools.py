"""The CAMM MP4 we upload, read by mapillary_tools 0.14.7 and ffprobe, and compared with the one
mapillary_tools itself builds and uploads (issue 4, point 2).

Source: ``gpmfparser__max-heromode.mp4`` (GoPro MAX: H.264 video, AAC audio, timecode, GPMF and
``fdsc`` tracks; 191 GPS points after the filters), its track read by
:func:`~daemon.media.video.read_video_track`, planned by
:func:`~daemon.media.camm_mp4.plan_camm_mp4` and written out through
:class:`~daemon.media.camm_mp4.CammStream`.

* **mapillary_tools reads it** (in ``.venv-mt``): its native video extractor
  (``geotag.video_extractors.native.NativeVideoExtractor``, the one ``process`` runs) finds a
  CAMM video with the same 191 points — times within half a tick of the 1/90000 s timescale,
  latitude/longitude equal (within 1e-6°), GPS times and fix equal — and make/model; so does
  our :func:`~daemon.media.camm.camm_track`. Also with the points moved 1.234 s later and
  stripped of their GPS time (type-5 samples placed by an edit list).
* **ffprobe/ffmpeg play it**: one H.264 848×480 video stream with the source's frame count and
  duration, no audio stream, a ``camm`` data stream with one sample per point; ``ffmpeg -f
  null`` decodes it without a message — with 32-bit ``stco`` and with forced ``co64`` alike.
* **mapillary_tools' own build** (``VideoUploader.build_camm_stream``: ``transform_mp4`` +
  ``camm_builder``): the same kept tracks with the same sample counts, the video samples
  byte-identical, the same points. Structural differences, asserted below: mapillary_tools
  renumbers the tracks (1, 2) where we keep the video's ID and give CAMM the source's
  ``next_track_ID`` (6); it rewrites the video's sample table as **one chunk** (one ``co64``
  entry), where we keep the source's 315 chunks (``stco``, 315 entries) and the source's
  interleaving; its CAMM times are truncated tick by tick (up to 191 ticks of drift by the
  last point), ours are rounded from each point's own time (half a tick at most); its CAMM
  ``tkhd`` duration is "unknown" (0xFFFFFFFF), ours is the real one.
* **What the mapillary_tools CLI uploads**: ``mapillary_tools process_and_upload`` of the
  recording, pointed at the sandbox with ``MAPILLARY_UPLOAD_ENDPOINT`` /
  ``MAPILLARY_GRAPH_API_ENDPOINT``; the MP4 the sandbox received for its ``mly_camm_video``
  cluster is read by our :func:`~daemon.media.camm.camm_track` with the source's 191 points.
* **Upload and resume**: the stream goes to the sandbox through
  :class:`~daemon.mapillary.UploadService` under ``mly_tools_<md5>.mp4``; cut after two
  pieces, it resumes from the server's offset with a new plan and a new stream (as after a
  restart), and the server ends up holding exactly the planned bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from daemon.mapillary import UploadService, session_key
from daemon.media import camm, mp4
from daemon.media.camm_mp4 import CammPlan, CammStream, md5_of, plan_camm_mp4
from daemon.media.video import VideoTrack, read_video_track
from daemon.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
MT_PYTHON = REPO / ".venv-mt" / "bin" / "python"
MAX = REPO.parent / "shared" / "corpus" / "video" / "gpmfparser__max-heromode.mp4"
FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")
RUN_TIMEOUT_S = 300
DEG = 1e-6
TICK = 1 / 90000  # the movie (and so the CAMM media) timescale of max-heromode.mp4
SHIFT_S = 1.234

pytestmark = pytest.mark.skipif(not MAX.is_file(), reason=f"no corpus video at {MAX}")
needs_mt = pytest.mark.skipif(
    not MT_PYTHON.exists(), reason=f"no mapillary_tools venv at {MT_PYTHON}"
)
needs_ffmpeg = pytest.mark.skipif(
    FFPROBE is None or FFMPEG is None, reason="ffprobe/ffmpeg not installed"
)

MT_SCRIPT = r"""
import json, shutil, sys
from pathlib import Path
from mapillary_tools.camm import camm_parser
from mapillary_tools.geotag.video_extractors.native import NativeVideoExtractor
from mapillary_tools.uploader import VideoUploader


def point(p):
    return {"time": p.time, "lat": p.lat, "lon": p.lon, "alt": p.alt,
            "epoch": getattr(p, "time_gps_epoch", None), "fix": getattr(p, "gps_fix_type", None)}


def read(job):
    md = NativeVideoExtractor(Path(job["path"])).extract()
    with open(job["path"], "rb") as fp:
        info = camm_parser.extract_camm_info(fp)
    return {"filetype": md.filetype.value, "make": md.make, "model": md.model,
            "points": [point(p) for p in md.points],
            "camm_points": len((info.gps or info.mini_gps) or []) if info else None}


def build(job):
    md = NativeVideoExtractor(Path(job["path"])).extract()
    with VideoUploader.build_camm_stream(md) as stream, open(job["out"], "wb") as out:
        shutil.copyfileobj(stream, out)
    return {"points": len(md.points)}


MODES = {"read": read, "build": build}
print(json.dumps([MODES[job["mode"]](job) for job in json.load(sys.stdin)]))
"""


def run_mt(jobs: list[dict[str, Any]]) -> list[Any]:
    proc = subprocess.run(
        [str(MT_PYTHON), "-c", MT_SCRIPT],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[Any] = json.loads(proc.stdout)
    return results


@cache
def source() -> VideoTrack:
    return read_video_track(MAX)


def shifted() -> list[mp4.TimedPoint]:
    """The source's points 1.234 s later and without GPS time (type-5 samples, an edit list)."""
    return [mp4.TimedPoint(p.time_s + SHIFT_S, p.lat, p.lon, p.alt) for p in source().points]


def plan_max(
    f: BinaryIO, points: list[mp4.TimedPoint] | None = None, *, force_co64: bool = False
) -> CammPlan:
    video = source()
    track = video.timed if points is None else mp4.timed_track(points, "max", movie_creation=None)
    return plan_camm_mp4(
        f,
        str(MAX),
        track,
        info=video.info,
        make=video.make,
        model=video.model,
        force_co64=force_co64,
    )


def build_ours(
    out: Path, points: list[mp4.TimedPoint] | None = None, *, force_co64: bool = False
) -> None:
    with open(MAX, "rb") as f, open(out, "wb") as g:
        plan = plan_max(f, points, force_co64=force_co64)
        shutil.copyfileobj(CammStream(plan, f), g)
    assert out.stat().st_size == plan.size


def assert_points(theirs: list[dict[str, Any]], expected: list[mp4.TimedPoint]) -> None:
    assert len(theirs) == len(expected) == 191
    for i, (a, b) in enumerate(zip(theirs, expected, strict=True)):
        assert abs(a["time"] - b.time_s) <= TICK / 2 + 1e-9, (i, a, b)
        assert abs(a["lat"] - b.lat) <= DEG and abs(a["lon"] - b.lon) <= DEG, (i, a, b)


# --- mapillary_tools reads ours --------------------------------------------------------------


@pytest.mark.mapillary_tools
@needs_mt
@pytest.mark.parametrize("variant", ["gopro", "shifted_type5"])
def test_mapillary_tools_reads_our_camm_mp4(tmp_path: Path, variant: str) -> None:
    out = tmp_path / "ours.mp4"
    expected = list(source().points) if variant == "gopro" else shifted()
    build_ours(out, None if variant == "gopro" else expected)
    theirs = run_mt([{"mode": "read", "path": str(out)}])[0]
    assert theirs["filetype"] == "camm"
    assert (theirs["make"], theirs["model"]) == ("GoPro", "GoPro Max")
    assert theirs["camm_points"] == 191
    assert_points(theirs["points"], expected)
    if variant == "gopro":
        assert [p["epoch"] for p in theirs["points"]] == [p.epoch_s for p in expected]
        assert {p["fix"] for p in theirs["points"]} == {3}
    else:
        assert all(p["epoch"] is None and p["fix"] is None for p in theirs["points"])
    # and our own CAMM reader
    with open(out, "rb") as f:
        ours = camm.camm_track(f, str(out))
    assert ours is not None and ours.kind == (6 if variant == "gopro" else 5)
    assert_points([{"time": p.time_s, "lat": p.lat, "lon": p.lon} for p in ours.points], expected)
    print(f"{variant}: mapillary_tools reads our CAMM MP4 as 191 CAMM points, as we wrote them")


# --- ffprobe / ffmpeg ------------------------------------------------------------------------


def ffprobe_streams(path: Path) -> list[dict[str, Any]]:
    assert FFPROBE is not None
    proc = subprocess.run(
        [FFPROBE, "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=True,
    )
    assert proc.stderr == ""
    streams: list[dict[str, Any]] = json.loads(proc.stdout)["streams"]
    return streams


@needs_ffmpeg
@pytest.mark.parametrize("variant", ["stco", "co64", "shifted_type5"])
def test_ffprobe_sees_a_playable_video(tmp_path: Path, variant: str) -> None:
    out = tmp_path / f"{variant}.mp4"
    build_ours(out, shifted() if variant == "shifted_type5" else None, force_co64=variant == "co64")
    (src_video,) = [s for s in ffprobe_streams(MAX) if s["codec_type"] == "video"]
    streams = ffprobe_streams(out)
    kinds = [s["codec_type"] for s in streams]
    assert kinds == ["video", "data"]  # no audio
    video, data = streams
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 848, 480)
    assert video["nb_frames"] == src_video["nb_frames"] == "315"
    assert float(video["duration"]) == pytest.approx(float(src_video["duration"]), abs=1e-3)
    assert data["codec_tag_string"] == "camm" and data["nb_frames"] == "191"
    assert FFMPEG is not None
    decode = subprocess.run(
        [FFMPEG, "-v", "error", "-nostdin", "-i", str(out), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr[-2000:]
    print(f"{variant}: h264 848x480, 315 frames, {video['duration']} s, camm 191; decodes clean")


# --- compared with what mapillary_tools builds -----------------------------------------------


def layout_of(path: Path) -> dict[str, Any]:
    """Per track: handler, ID, sample count, chunk table type and entries; the video samples."""
    with open(path, "rb") as f:
        info = mp4.probe(f, str(path))
        tracks = []
        for t in info.tracks:
            table = t.tables.co64 or t.tables.stco
            assert table is not None
            tracks.append(
                {
                    "handler": t.handler,
                    "id": t.track_id,
                    "samples": t.sample_count,
                    "table": table.type.decode(),
                    "chunks": (table.data_size - 8) // (8 if table.type == b"co64" else 4),
                    "tkhd_duration": _tkhd_duration(f, str(path), t),
                }
            )
        video = info.tracks[0]
        frames = [mp4.read_sample(f, "v", s) for s in mp4.iter_samples(f, "v", video)]
        telemetry = camm.camm_track(f, str(path), info=info)
    assert telemetry is not None
    return {"tracks": tracks, "frames": frames, "points": telemetry.points, "size": info.file_size}


def _tkhd_duration(f: BinaryIO, name: str, track: mp4.TrackInfo) -> int:
    tkhd = next(b for b in mp4.child_boxes(f, name, track.box) if b.type == b"tkhd")
    payload = mp4.read_payload(f, name, tkhd)
    return int.from_bytes(payload[20:24] if payload[0] == 0 else payload[28:36], "big")


@pytest.mark.mapillary_tools
@needs_mt
def test_compared_with_mapillary_tools_own_build(tmp_path: Path) -> None:
    theirs_path, ours_path = tmp_path / "theirs.mp4", tmp_path / "ours.mp4"
    assert run_mt([{"mode": "build", "path": str(MAX), "out": str(theirs_path)}]) == [
        {"points": 191}
    ]
    build_ours(ours_path)
    theirs, ours = layout_of(theirs_path), layout_of(ours_path)
    # the same kept tracks with the same sample counts; the video frames byte-identical
    assert [(t["handler"], t["samples"]) for t in theirs["tracks"]] == [
        ("vide", 315),
        ("camm", 191),
    ]
    assert [(t["handler"], t["samples"]) for t in ours["tracks"]] == [
        (t["handler"], t["samples"]) for t in theirs["tracks"]
    ]
    assert ours["frames"] == theirs["frames"]
    with open(MAX, "rb") as f:
        source_frames = [
            mp4.read_sample(f, "s", s) for s in mp4.iter_samples(f, "s", source().info.tracks[0])
        ]
    assert ours["frames"] == source_frames
    # the same points; ours closer to the source's times
    src = source().points
    for a, b, s in zip(ours["points"], theirs["points"], src, strict=True):
        assert (a.lat, a.lon, a.epoch_s) == (b.lat, b.lon, b.epoch_s) == (s.lat, s.lon, s.epoch_s)
        assert abs(a.time_s - s.time_s) <= TICK / 2 + 1e-9
        assert abs(b.time_s - s.time_s) <= 191 * TICK
    drift = max(abs(b.time_s - s.time_s) for b, s in zip(theirs["points"], src, strict=True))
    # the structural differences, stated
    assert [(t["id"], t["table"], t["chunks"]) for t in theirs["tracks"]] == [
        (1, "co64", 1),
        (2, "co64", 1),
    ]
    assert [(t["id"], t["table"], t["chunks"]) for t in ours["tracks"]] == [
        (1, "stco", 315),
        (6, "stco", 1),
    ]
    assert theirs["tracks"][1]["tkhd_duration"] == 0xFFFFFFFF
    assert ours["tracks"][1]["tkhd_duration"] == 946560  # the movie's duration, 10.517 s
    print(
        f"mapillary_tools: {theirs['size']} bytes, video as 1 co64 chunk, CAMM times drift up "
        f"to {drift * 1e6:.0f} µs; ours: {ours['size']} bytes, the source's 315 chunks in stco, "
        "CAMM times within half a tick; frames and points identical"
    )


# --- upload to the sandbox, cut, resume -------------------------------------------------------

TOKEN = "camm-mp4-test-token"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as sb:
        yield sb


class Cut(Exception):
    pass


def test_upload_is_resumed_by_offset_from_a_new_stream(sandbox: Sandbox, tmp_path: Path) -> None:
    out = tmp_path / "ours.mp4"
    build_ours(out)
    expected = out.read_bytes()

    def cut_after_two_pieces(offset: int) -> None:
        if offset >= 2 * 256 * 1024:
            raise Cut

    with UploadService(sandbox.upload_endpoint, TOKEN, chunk_size=256 * 1024) as uploads:
        with open(MAX, "rb") as f:
            stream = CammStream(plan_max(f), f)
            key = session_key(md5_of(stream), ".mp4")
            assert key == session_key(hashlib.md5(expected).hexdigest(), ".mp4")
            with pytest.raises(Cut):
                uploads.upload(key, stream, 0, cut_after_two_pieces)
        offset = stable_offset(uploads, key)
        assert 0 < offset < len(expected)
        with open(MAX, "rb") as f:  # "after a restart": a new plan, a new stream
            stream = CammStream(plan_max(f), f)
            assert session_key(md5_of(stream), ".mp4") == key
            handle = uploads.upload(key, stream, offset)
        assert handle
    held = httpx.get(f"{sandbox.url}/_sandbox/sessions/{key}").content
    assert held == expected
    print(
        f"cut at {offset} of {len(expected)} bytes, resumed from there: the sandbox holds the plan"
    )


def stable_offset(uploads: UploadService, key: str) -> int:
    """The server's offset once it has stopped receiving the abandoned body."""
    previous, deadline = -1, time.monotonic() + 5
    while (offset := uploads.fetch_offset(key)) != previous:
        assert time.monotonic() < deadline
        previous = offset
        time.sleep(0.1)
    return offset


# --- what the mapillary_tools CLI uploads, captured on the sandbox -----------------------------


@pytest.mark.mapillary_tools
@needs_mt
def test_the_camm_mp4_mapillary_tools_uploads_is_read_by_our_parser(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """``mapillary_tools process_and_upload`` of the GoPro MAX recording, pointed at the
    sandbox by its own environment variables: the bytes the sandbox keeps for its
    ``mly_camm_video`` cluster are read by our CAMM parser as the recording's 191 points (GPS
    times and positions equal; movie times within the tick drift its builder has, see above)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(MAX, videos / "GS010001.mp4")
    ini = tmp_path / "mapillary.ini"
    ini.write_text(f"[sandbox]\nuser_upload_token = {TOKEN}\n", encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "MAPILLARY_UPLOAD_ENDPOINT": sandbox.upload_endpoint,
        "MAPILLARY_GRAPH_API_ENDPOINT": sandbox.graph_endpoint,
        "MAPILLARY_CONFIG_PATH": str(ini),
        "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES",
        "MAPILLARY_UPLOAD_HISTORY_PATH": str(tmp_path / "history"),
        "MAPILLARY_TOOLS_UPLOAD_CACHE_DIR": str(tmp_path / "cache"),
        "MAPILLARY_TOOLS_MAX_UPLOAD_RETRIES": "2",
    }
    mt = MT_PYTHON.parent / "mapillary_tools"
    proc = subprocess.run(
        [str(mt), "process_and_upload", str(videos), "--user_name", "sandbox"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cluster] = sandbox.clusters()
    assert cluster["file_type"] == "mly_camm_video"
    uploaded = httpx.get(f"{sandbox.url}/_sandbox/sessions/{cluster['session_key']}").content
    (tmp_path / "captured.mp4").write_bytes(uploaded)
    telemetry = camm.camm_track(io.BytesIO(uploaded), "captured.mp4")
    assert telemetry is not None and telemetry.timed is not None
    got, src = telemetry.timed.points, source().points
    assert len(got) == len(src) == 191
    for a, s in zip(got, src, strict=True):
        assert (a.lat, a.lon, a.epoch_s) == (s.lat, s.lon, s.epoch_s)
        assert abs(a.lat - s.lat) <= DEG and abs(a.lon - s.lon) <= DEG
        assert abs(a.time_s - s.time_s) <= 191 * TICK
    layout = layout_of(tmp_path / "captured.mp4")
    assert [(t["handler"], t["samples"]) for t in layout["tracks"]] == [
        ("vide", 315),
        ("camm", 191),
    ]
    print(
        f"captured {len(uploaded)} bytes from mapillary_tools' upload "
        f"({cluster['session_key']}): our CAMM parser reads 191 points, equal to the source's"
    )
