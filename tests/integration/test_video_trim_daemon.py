"""A native video through a privacy zone, trimmed by the running daemon (issue #4, trimming).

The corpus GoPro MAX recording is a 10.5 s walk of 13 m. A privacy zone of 2 m is placed on
the point the walk reaches at 5.2 s. The daemon must upload the stretches before and after
the zone as two ``mly_camm_video`` clusters, cut at keyframes without re-encoding, and mark the
video ``trimmed`` with a note. What the sandbox received is then read by mapillary_tools
0.14.7's own parsers (in ``.venv-mt``: its native video extractor and its CAMM parser, which
is what its uploader relies on) — no GPS point of either clip may lie in the zone — and by
ffprobe / ``ffmpeg -f null``, which must decode every frame without a complaint.

The zone is small and the margins are set small in the config (0 m, 0.5 s) because the whole
walk is shorter than the default 10 m margin: with the defaults the video is refused whole.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import Config, load_config
from daemon.geo.distance import haversine_m
from daemon.media import camm
from daemon.media.video import read_video_track
from daemon.sandbox import Sandbox
from tests.conftest import CORPUS, MT_PYTHON
from tests.e2e.harness import wait_until
from tests.integration.test_service import TOKEN, counts, running, status

MAX = CORPUS / "video" / "gpmfparser__max-heromode.mp4"
ZONE_AT_S = 5.2
ZONE_RADIUS_M = 2.0
FFPROBE = shutil.which("ffprobe")
FFMPEG = shutil.which("ffmpeg")
RUN_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.skipif(not MAX.is_file(), reason=f"no corpus video at {MAX} (../shared absent)"),
    pytest.mark.skipif(not MT_PYTHON.exists(), reason=f"no mapillary_tools venv at {MT_PYTHON}"),
    pytest.mark.mapillary_tools,
]

MT_READ = r"""
import json, sys
from pathlib import Path
from mapillary_tools.camm import camm_parser
from mapillary_tools.geotag.video_extractors.native import NativeVideoExtractor

out = []
for path in json.load(sys.stdin):
    md = NativeVideoExtractor(Path(path)).extract()
    with open(path, "rb") as fp:
        info = camm_parser.extract_camm_info(fp)
    gps = (info.gps or info.mini_gps or []) if info else []
    out.append({
        "filetype": md.filetype.value,
        "points": [{"time": p.time, "lat": p.lat, "lon": p.lon} for p in md.points],
        "camm": [{"time": p.time, "lat": p.lat, "lon": p.lon} for p in gps],
    })
print(json.dumps(out))
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def trim_config(tmp: Path, sandbox: Sandbox, lat: float, lon: float) -> Config:
    card = tmp / "card"
    card.mkdir()
    path = tmp / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{card}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
trim_margin_m = 0
trim_margin_seconds = 0.5
trim_min_seconds = 2
[[privacy_zone]]
name = "middle"
lat = {lat!r}
lon = {lon!r}
radius_m = {ZONE_RADIUS_M}
""",
        encoding="utf-8",
    )
    return load_config(path, env={"MAPILLARY_TOKEN": TOKEN})


def mapillary_tools_read(paths: list[Path]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(MT_PYTHON), "-c", MT_READ],
        input=json.dumps([str(p) for p in paths]),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def test_a_video_through_a_privacy_zone_is_uploaded_as_two_clips(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    source = read_video_track(MAX)
    middle = min(source.points, key=lambda p: abs(p.time_s - ZONE_AT_S))
    inside = [
        p
        for p in source.points
        if haversine_m(middle.lat, middle.lon, p.lat, p.lon) <= ZONE_RADIUS_M
    ]
    assert 20 < len(inside) < 100  # the zone really holds a stretch of the walk
    cfg = trim_config(tmp_path, sandbox, middle.lat, middle.lon)

    with running(cfg):
        shutil.copy(MAX, tmp_path / "card" / "GX010003.MP4")
        wait_until(
            lambda: counts(cfg)["done"] == 2 and counts(cfg)["trimmed"] == 1,
            RUN_TIMEOUT_S,
            "both clips uploaded",
        )
        report = status(cfg)

    # the whole video: trimmed, with a note saying what was kept and why
    [row] = [r for r in report["not_uploaded"] if r["state"] == "trimmed"]  # type: ignore[attr-defined]
    assert row["reason"] == "trimmed"
    assert row["detail"].startswith("GX010003.MP4: kept 2 of 2 stretches: 0–")
    assert 'dropped privacy zone "middle"' in row["detail"]
    assert any(row["detail"] in n["notes"] for n in report["processing_notes"])  # type: ignore[attr-defined]
    print(row["detail"])

    clusters = sandbox.clusters()
    assert [c["file_type"] for c in clusters] == ["mly_camm_video"] * 2
    clips = []
    for number, cluster in enumerate(clusters):
        key = cluster["session_key"]
        with urllib.request.urlopen(f"{sandbox.url}/_sandbox/sessions/{key}", timeout=30) as r:
            data = r.read()
        path = tmp_path / f"clip{number}.mp4"
        path.write_bytes(data)
        clips.append(path)
    # the card's file is untouched
    assert (tmp_path / "card" / "GX010003.MP4").read_bytes() == MAX.read_bytes()

    read = mapillary_tools_read(clips)
    times = []
    for path, theirs in zip(clips, read, strict=True):
        assert theirs["filetype"] == "camm"
        assert len(theirs["camm"]) == len(theirs["points"]) >= 20
        for p in theirs["camm"] + theirs["points"]:
            distance = haversine_m(middle.lat, middle.lon, p["lat"], p["lon"])
            assert distance > ZONE_RADIUS_M, (
                f"{path.name}: a point {distance:.2f} m from the centre"
            )
        # the clip's points are the source's, rebased to the clip's start
        ours = camm.camm_track(io.BytesIO(path.read_bytes()), path.name)
        assert ours is not None and ours.timed is not None
        first = ours.timed.points[0]
        start = next(p for p in source.points if (p.lat, p.lon) == (first.lat, first.lon))
        times.append((start.time_s, start.time_s + ours.timed.points[-1].time_s))
        assert [round(p["time"], 3) for p in theirs["points"]] == [
            round(p.time_s, 3) for p in ours.timed.points
        ]
    # in source time, one clip ends before the zone's first point, the other starts after its last
    (a0, a1), (b0, b1) = sorted(times)
    assert a0 == 0.0 and a1 < inside[0].time_s and b0 > inside[-1].time_s and b1 > 10.0
    print(
        f"clips: {a0:.2f}–{a1:.2f} s and {b0:.2f}–{b1:.2f} s of GPS; zone {inside[0].time_s:.2f}"
        f"–{inside[-1].time_s:.2f} s"
    )

    if FFPROBE is None or FFMPEG is None:
        pytest.skip("ffprobe/ffmpeg not installed: the clips were not decoded")
    for path in clips:
        probe = subprocess.run(
            [FFPROBE, "-v", "error", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=True,
        )
        assert probe.stderr == ""
        streams = json.loads(probe.stdout)["streams"]
        assert [s["codec_type"] for s in streams] == ["video", "data"]
        video = streams[0]
        assert video["codec_name"] == "h264" and int(video["nb_frames"]) > 60
        assert float(video["start_time"]) == 0.0
        decode = subprocess.run(
            [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert decode.returncode == 0 and decode.stderr == "", decode.stderr[-2000:]
        print(
            f"{path.name}: h264, {video['nb_frames']} frames, {video['duration']} s; decodes clean"
        )
